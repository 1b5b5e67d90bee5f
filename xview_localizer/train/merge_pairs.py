"""Merge ``xview-pairs/1`` folders into one (parallel exports: ``scripts/make_styled_data.sh``).

    python -m xview_localizer.train.merge_pairs --out merged part0 part1 ...

Records are renumbered ``000000..`` in the order given; images are moved (hard-linked when the
parts stay); ``meta.json`` is the first part's with the summed count, the union of the worlds
and the parts' seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from ..core.errors import DatasetError

__all__ = ["merge_pair_dirs"]


def merge_pair_dirs(parts: Sequence[Path], out: Path, *, move: bool = True) -> Path:
    """Merge ``parts`` into the new folder ``out``; returns ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not empty")
    if not parts:
        raise DatasetError("merge_pair_dirs: no parts")
    for sub in ("ground", "sat", "depth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    metas, lines, n = [], [], 0
    for part in map(Path, parts):
        try:
            metas.append(json.loads((part / "meta.json").read_text()))
            records = [json.loads(x) for x in (part / "pairs.jsonl").read_text().splitlines() if x.strip()]
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{part}: not a readable pair folder ({exc})") from exc
        for rec in records:
            name = f"{n:06d}"
            for key in ("ground", "sat", "depth"):
                src = part / rec[key]
                dst = out / key / f"{name}.png"
                if move:
                    shutil.move(str(src), dst)
                else:
                    os.link(src, dst)
                rec[key] = f"{key}/{name}.png"
            rec["id"] = name
            lines.append(json.dumps(rec))
            n += 1
    tmp = out / "pairs.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "pairs.jsonl")
    meta = dict(metas[0])
    meta["count"] = n
    meta["worlds"] = sorted({int(w) for m in metas for w in m.get("worlds", [])})
    meta["seed"] = [m.get("seed") for m in metas]
    if any("camera_models" in m for m in metas):  # lens counts of `sim dataset`, summed
        kinds: dict[str, int] = {}
        for m in metas:
            for k, c in m.get("camera_models", {}).items():
                kinds[k] = kinds.get(k, 0) + int(c)
        meta["camera_models"] = dict(sorted(kinds.items()))
    meta["merged_from"] = [str(Path(p).resolve()) for p in parts]
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("parts", type=Path, nargs="+")
    args = ap.parse_args(argv)
    merge_pair_dirs(args.parts, args.out)
    print(f"merged {len(args.parts)} parts into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
