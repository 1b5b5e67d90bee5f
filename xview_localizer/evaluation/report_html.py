"""The report's ``index.html`` and the console summary table.

Page order: the summary table (GNSS-only vs xview_localizer) first, then the plots, then the
frame panels (worst, typical, rejected examples; when they come from another run,
``report['panels_from']``, a highlighted note above them says which and compares the two
runs), then the detailed tables (paper metrics, NEES, rejections by reason, latency, reported
uncertainty) and the provenance. Images are referenced by relative paths
(``src='trajectory.png'``, ``src='panels/...png'``), so the folder can be moved or served as it
is.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..train.metrics import METRIC_NAMES
from .report_plots import PLOT_CAPTIONS

__all__ = ["summary_rows", "format_summary", "write_html"]

_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
          "th{background:#eee}td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:0.3em 0}"
          "figure{margin:1em 0}figcaption{color:#555;font-size:0.9em}.note{color:#555}"
          "table.summary td,table.summary th{font-size:1.05em;padding:4px 12px}"
          ".source{background:#fff8e1;border-left:4px solid #f0a000;padding:0.5em 1em}")
_PANEL_HEADINGS = (("worst", "Worst frames"), ("typical", "Typical frames (near the median)"),
                   ("rejected", "Rejected frames (one per frequent reason)"))


def _cell(v: Any, name: str = "") -> str:
    if v is None:
        return "n/a"
    if "recall" in name or name == "availability":
        return f"{100.0 * v:.1f} %"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def summary_rows(report: dict) -> list[tuple[str, str, str]]:
    """(quantity, GNSS-only, xview_localizer) rows of the short comparison table."""
    m = report.get("metrics") or {}
    x, g = m.get("xview") or {}, m.get("gnss_same_frames") or {}
    lat = report["latency"]
    rows = [
        ("frames evaluated (accepted, with GT)", _cell(g.get("n_samples")), _cell(x.get("n_samples"))),
        ("median position error (m)", _cell(g.get("xy_err_median_m")), _cell(x.get("xy_err_median_m"))),
        ("mean position error (m)", _cell(g.get("xy_err_mean_m")), _cell(x.get("xy_err_mean_m"))),
        ("median yaw error (deg)", _cell(g.get("yaw_err_median_deg")), _cell(x.get("yaw_err_median_deg"))),
        ("mean yaw error (deg)", _cell(g.get("yaw_err_mean_deg")), _cell(x.get("yaw_err_mean_deg"))),
        ("lateral recall @1 m", _cell(g.get("lateral_recall_1m"), "recall"),
         _cell(x.get("lateral_recall_1m"), "recall")),
        ("availability", "100.0 % (GNSS)", _cell(report["availability"], "availability")),
        ("latency p50 / p90 (ms)", "-", f"{_cell(lat['p50_ms'])} / {_cell(lat['p90_ms'])}"),
    ]
    skipped = report["frames"].get("skipped", 0)
    if skipped:
        rows.append(("frames localized / skipped (--every)", "-", f"{report['frames']['total']} / {skipped}"))
    return rows


def format_summary(report: dict) -> str:
    """The short console table (GNSS-only vs xview_localizer)."""
    rows = summary_rows(report)
    w0 = max(len(r[0]) for r in rows)
    lines = [f"{'':<{w0}}  {'GNSS-only':>16}  {'xview_localizer':>16}"]
    lines += [f"{a:<{w0}}  {b:>16}  {c:>16}" for a, b, c in rows]
    return "\n".join(lines)



def _provenance(report: dict) -> list[str]:
    esc = html.escape
    meta = report.get("meta") or {}
    return ["<h2>Provenance</h2><p>" + "<br>".join(f"<b>{esc(str(k))}</b>: {esc(str(v))}" for k, v in meta.items())
            + "</p>"]


def _detail_tables(report: dict) -> list[str]:
    esc = html.escape
    parts: list[str] = []
    if report.get("metrics"):
        cols = list(report["metrics"])
        parts.append("<h2>Metrics (paper protocol)</h2><table><tr><th>metric</th>"
                     + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>")
        names = ["n_samples", "n_yaw_samples", *[n for n in METRIC_NAMES if n != "n_samples"]]
        for name in names:
            parts.append(f"<tr><td>{esc(name)}</td>" + "".join(
                f"<td>{esc(_cell(report['metrics'][c].get(name), name))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    if report.get("nees"):
        parts.append("<h2>Covariance consistency (NEES)</h2><table><tr><th></th><th>n</th><th>mean</th>"
                     "<th>median</th><th>within chi2 95 %</th></tr>")
        for k in ("position_2dof", "pose_3dof"):
            v = report["nees"][k]
            parts.append(f"<tr><td>{k} (expected mean {v['dof']})</td><td>{v['n']}</td><td>{_cell(v['mean'])}</td>"
                         f"<td>{_cell(v['median'])}</td><td>{_cell(v['fraction_within_chi2_95'], 'recall')}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Rejected frames by reason</h2><table><tr><th>reason</th><th>frames</th></tr>")
    parts += [f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in report["rejected_by_reason"].items()]
    parts.append("</table>")
    lat = report["latency"]
    keys = ("n", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")
    parts.append(f"<h2>Latency</h2><p>{esc(lat['measures'])}</p><table><tr>" + "".join(f"<th>{k}</th>" for k in keys)
                 + "</tr><tr>" + "".join(f"<td>{_cell(lat[k])}</td>" for k in keys) + "</tr></table>")
    parts.append("<h2>Reported uncertainty</h2><table><tr><th></th><th>n</th><th>mean</th><th>median</th>"
                 "<th>p90</th></tr>")
    for k, v in report["covariance"].items():
        parts.append(f"<tr><td>{k}</td><td>{v['n']}</td><td>{_cell(v['mean'])}</td><td>{_cell(v['median'])}</td>"
                     f"<td>{_cell(v['p90'])}</td></tr>")
    parts.append("</table>")
    return parts


def _runs_compared(src: dict) -> str:
    """One sentence comparing the panels' run with the report's own (``report['panels_from']``)."""
    def run(name: str, r: dict) -> str:
        if not r or not r["frames"]:
            return f"{name}: no frames"
        text = f"{name}: {r['accepted']} of {r['frames']} ({100.0 * r['availability']:.1f} %)"
        if r["xy_err_median_m"] is not None:
            text += f", median / mean position error {r['xy_err_median_m']:.2f} / {r['xy_err_mean_m']:.2f} m"
        return text

    return f"Frames accepted: {run(src['label'], src['run'])}; {run(src['main_label'], src['main'])}."


def _panels(report: dict) -> list[str]:
    esc = html.escape
    panels = report.get("panels") or []
    parts = ["<h2 id='panels'>Frames</h2>"]
    src = report.get("panels_from")
    if src:
        parts.append(f"<p class='source' id='panels-source'>{esc(src['note'])} {esc(_runs_compared(src))}</p>")
    note = report.get("panels_note")
    if note:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    for kind, heading in _PANEL_HEADINGS:
        mine = [p for p in panels if p["kind"] == kind]
        if not mine:
            continue
        parts.append(f"<h3>{esc(heading)}</h3>")
        for p in mine:
            parts.append(f"<figure><img src='{esc(p['file'])}' alt='{esc(p['label'])}'>"
                         f"<figcaption>{esc(p['caption'])}</figcaption></figure>")
    return parts


def write_html(report: dict, path: Path) -> None:
    """Write ``index.html`` for ``report`` (the dict of report.json, with ``plots`` and
    ``panels``) to ``path``."""
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>xview_localizer report</title>",
             f"<style>{_STYLE}</style></head><body><h1>xview_localizer evaluation</h1>"]
    fr = report["frames"]
    source = (report.get("meta") or {}).get("estimates", "")
    src = report.get("panels_from")  # the panels' run, when not these estimates
    parts.append("<h2>Summary</h2><table class='summary' id='summary'><tr><th></th><th>GNSS-only</th>"
                 "<th>xview_localizer</th></tr>")
    parts += [f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td></tr>" for a, b, c in summary_rows(report)]
    parts.append("</table>")
    parts.append(f"<p>{fr['total']} frames over {fr['duration_s']:.1f} s; accepted {fr['accepted']} "
                 f"(availability {100 * report['availability']:.1f} %); with ground truth {fr['with_ground_truth']}"
                 + (f"; {fr['skipped']} more skipped (not localized: replay --every)" if fr.get("skipped") else "")
                 + (f". Estimates: {esc(str(source))}" if source else "")
                 + (f". The frame panels below are from the {esc(src['label'])}, not from these estimates "
                    "(<a href='#panels-source'>why</a>)" if src else "") + ".</p>")
    parts.append("<h2>Plots</h2>")
    for name in report.get("plots", []):
        caption = PLOT_CAPTIONS.get(name, "")
        if src and name == "trajectory.png":
            caption += (f" The marked frames' panels are from the {src['label']}; the estimates drawn here are "
                        f"the {src['main_label']}'s.")
        parts.append(f"<figure><img src='{esc(name)}' alt='{esc(name)}'><figcaption>{esc(caption)}</figcaption>"
                     "</figure>")
    parts += _panels(report)
    parts += _detail_tables(report)
    parts += _provenance(report)
    parts.append("<p>Per-frame values: <a href='frames.csv'>frames.csv</a>; numbers: "
                 "<a href='report.json'>report.json</a>; trajectories for evo: <code>poses/</code> (rosbag2), "
                 "<code>*.tum</code>.</p></body></html>")
    path.write_text("\n".join(parts))
