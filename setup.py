"""ament_python / pip packaging of xview_localizer."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "xview_localizer"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["checkpoints/*.pt"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="xview_localizer maintainers",
    maintainer_email="xview-localizer@example.com",
    description="Cross-view camera localization against satellite imagery for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "localizer_node = xview_localizer.ros.node:main",
            "xview-localizer = xview_localizer.cli:main",
        ],
    },
)
