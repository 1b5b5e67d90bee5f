"""``xview-localizer sim serve-tiles WORLD_DIR --port P``: serve a world's aerial tile pyramid
over HTTP on 127.0.0.1 (the real tile server of :mod:`xview_localizer.tiles.server`).

A world directory written by the ``sim world`` command holds ``world.json`` and the pyramid
``tiles/{z}/{x}/{y}.png`` (or only ``tiles.mbtiles``). :func:`serve_world_tiles` serves the
folder when it exists, else the MBTiles file; the tile URL is then
``http://127.0.0.1:<port>/{z}/{x}/{y}.png``.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import DatasetError

#: Names inside a world directory (shared with the ``sim world`` command).
TILES_DIRNAME = "tiles"
MBTILES_NAME = "tiles.mbtiles"


def world_tiles_location(world_dir: Path) -> Path:
    """The tile folder of a world directory, or its MBTiles file if there is no folder.
    Raises DatasetError naming what is missing."""
    d = Path(world_dir)
    if not d.is_dir():
        raise DatasetError(f"{d}: world directory does not exist")
    folder = d / TILES_DIRNAME
    if folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir()):
        return folder
    mb = d / MBTILES_NAME
    if mb.is_file():
        return mb
    raise DatasetError(f"{d}: no tile pyramid ({TILES_DIRNAME}/ or {MBTILES_NAME}); write it with "
                       "`xview-localizer sim world` or sim.aerial.write_tile_pyramid")


def serve_world_tiles(world_dir: Path, port: int = 0):
    """Start serving the world's tiles on 127.0.0.1:``port`` (0 = any free port); returns the
    started :class:`xview_localizer.tiles.server.TileServer` (``.port``, ``.url_template()``,
    ``.shutdown()``)."""
    from ..tiles.server import serve_directory, serve_mbtiles

    loc = world_tiles_location(world_dir)
    if loc.is_dir():
        return serve_directory(loc, port=port)
    return serve_mbtiles(loc, port=port)
