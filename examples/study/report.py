#!/usr/bin/env python3
"""Writes the study's report from what the registry holds (examples/study/run.sh calls it).

    report.py --clreg BIN --semi C --full C --tasks T… --times FILE --out docs/study.md [--settings S]

Reads artifacts, evaluations and round series with `clreg --json` (as whoever CLREG_CONFIG_DIR
is logged in as; an auditor is enough), and writes the tables in the layout of the study's (old knowledge
after the last round; new knowledge per round with gain over base and relative BWT; the
fully-cooperative tables; the semi-cooperative methods side by side), SVG charts of the BWT
history next to the report, wall time per method, and a check of each of the study's findings
against these numbers. Standard library only.
"""
import argparse
import collections
import json
import pathlib
import subprocess

OLD = ["facts", "mmlu"]
SEQUENTIAL = [  # (collaboration key, series / artifact prefix, label)
    ("semi", "seq-fft", "FFT"),
    ("semi", "seq-lora", "LoRA"),
    ("semi", "olora-0.5", "O-LoRA λ=0.5"),
    ("semi", "olora-5", "O-LoRA λ=5"),
    ("full", "rep-fft", "FFT-Rep (10%)"),
    ("full", "rep-lora", "LoRA-Rep (10%)"),
]
VARIATION = [("semi", "seq-lora-s2", "LoRA, seed 2"), ("semi", "olora-0.5-s2", "O-LoRA λ=0.5, seed 2")]


def clreg(a, *args):
    out = subprocess.run([a.clreg, "--json", "--quiet", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


class Registry:
    """Scores by (collaboration, artifact name, task): the newest version's evaluations."""

    def __init__(self, a):
        self.a, self.collab, self.scores, self.names = a, {"semi": a.semi, "full": a.full}, {}, {}
        for key, c in self.collab.items():
            newest = {}
            for art in clreg(a, "ls", "--collab", c):
                if art["name"] not in newest or art["version"] > newest[art["name"]]["version"]:
                    newest[art["name"]] = art
            by_id = {art["id"]: name for name, art in newest.items()}
            self.names[key] = newest
            for e in clreg(a, "evaluations", "--collab", c):
                if e["artifact"] in by_id:
                    self.scores[(key, by_id[e["artifact"]], e["task"])] = e["score"]

    def score(self, key, name, task):
        return self.scores.get((key, name, task))

    def has(self, key, name):
        return name in self.names[key]

    def series(self, key, name):
        try:
            return clreg(self.a, "series", "report", name, "--collab", self.collab[key])
        except subprocess.CalledProcessError:
            return None


def pct(x):
    return "" if x is None else f"{100 * x:+.0f}%"


def num(x):
    return "–" if x is None else f"{x:.3f}"


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def old_table(r, rows):
    """Old knowledge: one row per (label, key, name), with the average gain over the base."""
    out, base = [], {t: r.score(rows[0][1], "base", t) for t in OLD}
    for label, key, name in rows:
        s = [r.score(key, name, t) for t in OLD]
        gains = [(x - base[t]) / base[t] if x is not None and base[t] else None for x, t in zip(s, OLD)]
        out.append([label, num(mean(s)), *map(num, s), pct(mean(gains)) if name != "base" else ""])
    return table(["model", "AVE", *OLD, "gain over base"], out)


def new_knowledge(report, tasks):
    """The study's tables 3 and 4: per round, gain over base and relative BWT."""
    rows = []
    for row in report["matrix"]:
        s = row["scores"]
        rows.append([("1" if row["round"] == 1 else f"1-{row['round']}"), *map(num, s), num(mean(s))])
    t = report.get("transfer") or {}
    gain = t.get("gain") or [None] * len(tasks)
    rows.append(["gain over base", *map(pct, gain), pct(t.get("average_gain"))])
    rel = t.get("relative_bwt") or [None] * len(tasks)
    rows.append(["BWT (relative)", *map(pct, rel[:-1]), "", ""])
    rows.insert(0, ["base", *map(num, report["base"]["scores"]), num(mean(report["base"]["scores"]))])
    text = table(["round", *tasks, "AVE"], rows)
    if t:
        text += f"\n\nBWT {100 * t['bwt']:+.1f} %, FWT {pct(t.get('fwt')) or '–'}, final average {t['final_average']:.3f}."
    if report.get("missing"):
        text += f"\n\nMissing: {', '.join(report['missing'])}."
    return text


def svg_history(path, curves):
    """A line chart of BWT after each round, one curve per method (SVG by hand)."""
    w, h, pad = 560, 300, 48
    pts = [(x, y) for _, c in curves for x, y in c]
    if not pts:
        return False
    xmax = max(x for x, _ in pts)
    ylo, yhi = min(0.0, min(y for _, y in pts)), max(0.0, max(y for _, y in pts))
    yhi, ylo = yhi + 0.05 * (yhi - ylo or 1), ylo - 0.05 * (yhi - ylo or 1)
    X = lambda x: pad + (x - 1) / max(xmax - 1, 1) * (w - 2 * pad)
    Y = lambda y: h - pad - (y - ylo) / (yhi - ylo) * (h - 2 * pad)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 20 * len(curves)}" font-family="sans-serif" font-size="12">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<line x1="{pad}" y1="{Y(0):.1f}" x2="{w - pad}" y2="{Y(0):.1f}" stroke="#999" stroke-dasharray="4 3"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#333"/>',
           f'<text x="{pad}" y="{pad - 12}">BWT after each round</text>']
    for v in (ylo, 0.0, yhi):
        out.append(f'<text x="{pad - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{100 * v:.0f}%</text>')
    for x in range(1, xmax + 1):
        out.append(f'<text x="{X(x):.1f}" y="{h - pad + 16}" text-anchor="middle">{x}</text>')
    for i, (label, c) in enumerate(curves):
        color = colors[i % len(colors)]
        d = " ".join(f"{'M' if j == 0 else 'L'}{X(x):.1f},{Y(y):.1f}" for j, (x, y) in enumerate(c))
        out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{color}"/>' for x, y in c]
        out.append(f'<text x="{pad}" y="{h + 16 * i + 4}" fill="{color}">■ {label}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clreg", required=True)
    ap.add_argument("--semi", required=True)
    ap.add_argument("--full", required=True)
    ap.add_argument("--tasks", nargs="+", required=True)
    ap.add_argument("--times", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--settings", default="")
    ap.add_argument("--test", type=int, default=0, help="test examples per task (for the text)")
    a = ap.parse_args()
    r, tasks, n = Registry(a), a.tasks, len(a.tasks)
    r.a_test = a.test
    out = pathlib.Path(a.out)
    img = out.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    last = lambda p: f"{p}-r{n}"
    md = ["# The study in miniature, through the registry", "",
          "Generated by `examples/study/run.sh` (`examples/study/report.py`) from the registry's "
          "artifacts, evaluations and round series; rerun the script to regenerate it.", "",
          f"Settings: `{a.settings}`. Tasks in training order: {', '.join(tasks)}. "
          f"Collaborations: `{a.semi}` (semi-cooperative), `{a.full}` (fully-cooperative).", ""]

    # Old knowledge after the last round (tables 1 and 2).
    md += ["## Old knowledge after the last round (tables 1 and 2)", "",
           old_table(r, [("base", "semi", "base"), ("FFT", "semi", last("seq-fft")),
                         ("LoRA", "semi", last("seq-lora"))]), ""]
    # New knowledge per round (tables 3 and 4, and the same for O-LoRA and replay).
    reports = {}
    for key, prefix, label in SEQUENTIAL + VARIATION:
        rep = r.series(key, prefix)
        if rep:
            reports[prefix] = rep
    for key, prefix, label in SEQUENTIAL:
        if prefix in reports:
            md += [f"## New knowledge, sequential {label} (`{prefix}`)", "", new_knowledge(reports[prefix], tasks), ""]
    # Fully-cooperative (tables 5 and 6): the sequential semi rows are the same training.
    full_rows = [("base", "full", "base"), ("Joint-LoRA", "full", "joint-lora"), ("LoRA", "semi", last("seq-lora")),
                 ("LoRA-Rep", "full", last("rep-lora")), ("Joint-FFT", "full", "joint-fft"),
                 ("FFT", "semi", last("seq-fft")), ("FFT-Rep", "full", last("rep-fft"))]
    md += ["## Fully-cooperative, old knowledge (table 5)", "", old_table(r, full_rows), ""]

    def final_rows(rows):
        out = []
        for label, key, name in rows:
            new = [r.score(key, name, t) for t in tasks]
            old = [r.score(key, name, t) for t in OLD]
            out.append([label, *map(num, new), num(mean(new)), num(mean(new + old))])
        return table(["model", *tasks, "AVnew", "AVall"], out)

    md += ["## Fully-cooperative, new knowledge of the final models (table 6)", "", final_rows(full_rows), "",
           "AVall averages the new tasks and the old-knowledge sets together.", ""]
    semi_rows = [("base", "semi", "base"), ("Seq-FFT", "semi", last("seq-fft")), ("Seq-LoRA", "semi", last("seq-lora")),
                 ("O-LoRA λ=0.5", "semi", last("olora-0.5")), ("O-LoRA λ=5", "semi", last("olora-5")),
                 ("Merge: linear", "semi", "merge-linear"), ("Merge: TIES", "semi", "merge-ties"),
                 ("Merge: DARE-TIES", "semi", "merge-dare"), ("MoE (FFT experts)", "semi", "moe-fft"),
                 ("MoE (FFT), trained routers", "semi", "moe-fft-rt"), ("LoRA-MoE", "semi", "moe-lora"),
                 ("LoRA-MoE, trained routers", "semi", "moe-lora-rt")]
    md += ["## Semi-cooperative methods side by side", "", final_rows(semi_rows), "",
           old_table(r, semi_rows), ""]
    # The independent models on their own tasks: what each merge and mixture starts from.
    ind = [("semi", "seq-lora-r1" if i == 0 else f"ind-lora-t{i + 1}") for i in range(n)]
    indf = [("semi", "seq-fft-r1" if i == 0 else f"ind-fft-t{i + 1}") for i in range(n)]
    md += ["Independent models, each on its own task (the experts and merge inputs): "
           + "LoRA " + ", ".join(f"{t} {num(r.score(k, m, t))}" for (k, m), t in zip(ind, tasks))
           + "; FFT " + ", ".join(f"{t} {num(r.score(k, m, t))}" for (k, m), t in zip(indf, tasks)) + ".", ""]

    # BWT history charts.
    md += ["## BWT across rounds", ""]
    for group, members in [("semi", SEQUENTIAL[:4]), ("full", SEQUENTIAL[4:] + SEQUENTIAL[:2])]:
        curves = []
        for key, prefix, label in members:
            hist = (reports.get(prefix) or {}).get("history") or []
            c = [(p["round"], p["bwt"]) for p in hist if p.get("bwt") is not None]
            if c:
                curves.append((label, c))
        name = f"study-bwt-{group}.svg"
        if svg_history(img / name, curves):
            md += [f"![BWT after each round, {group}](img/{name})", ""]

    # Variation: the two cheapest methods with a second seed.
    var = []
    for (key, prefix, label), base_prefix in zip(VARIATION, ["seq-lora", "olora-0.5"]):
        a_, b_ = reports.get(base_prefix), reports.get(prefix)
        if a_ and b_ and a_.get("transfer") and b_.get("transfer"):
            ta, tb = a_["transfer"], b_["transfer"]
            var.append([label.split(",")[0], f"{ta['final_average']:.3f} / {tb['final_average']:.3f}",
                        f"{100 * ta['bwt']:+.1f} / {100 * tb['bwt']:+.1f} %",
                        f"{abs(ta['final_average'] - tb['final_average']):.3f}"])
    if var:
        md += ["## Variation (seed 1 / seed 2)", "",
               table(["method", "final average", "BWT", "spread of the average"], var), ""]

    # Wall time per method.
    times = collections.OrderedDict()
    p = pathlib.Path(a.times)
    if p.exists():
        for line in p.read_text().split("\n"):
            if line.strip():
                k, s = line.rsplit(" ", 1)
                times[k] = times.get(k, 0) + int(s)
    if times:
        md += ["## Wall time (2 cores, jobs run one at a time)", "",
               table(["method", "minutes"], [[k, f"{v / 60:.1f}"] for k, v in times.items()]), ""]

    # The study's findings, checked against these numbers, and how far noise reaches.
    md += ["## The study's findings at this scale", ""] + findings(r, reports, tasks, last) + [""]
    spreads = [float(row[3]) for row in var]
    if spreads:
        md += [f"A second seed moved the final new-task average by up to {max(spreads):.3f} "
               f"({', '.join(f'{row[0]} {row[3]}' for row in var)}), with {int(r.a_test)} test examples "
               "per task: differences between methods smaller than that are not told apart from noise "
               "at this size, and a verdict above that rests on such a difference is a coin toss.", ""]
    out.write_text("\n".join(md))
    print(f"wrote {out}")


def findings(r, reports, tasks, last):
    def old_gain(key, name):
        g = []
        for t in OLD:
            b, x = r.score(key, "base", t), r.score(key, name, t)
            if b and x is not None:
                g.append((x - b) / b)
        return mean(g)

    def avg_new(key, name):
        return mean([r.score(key, name, t) for t in tasks])

    def bwt(prefix):
        t = (reports.get(prefix) or {}).get("transfer")
        return t and t["bwt"]

    def say(claim, holds, evidence):
        """`holds`: True, False, None (not measured) or "tie" (the figures compared are equal
        to within 0.005, which these test-set sizes cannot tell apart)."""
        verdict = {True: "**holds**", False: "**does not hold**", None: "**not measured**",
                   "tie": "**undecided** (equal figures)"}[holds]
        return f"- {claim}: {verdict} here ({evidence})."

    def above(a, b, margin=0.0):
        """a > b - margin, or a tie; None when either is missing."""
        if a is None or b is None:
            return None
        if abs(a - b) < 0.005:
            return "tie"
        return a > b - margin

    fmt = lambda x: "–" if x is None else f"{100 * x:+.1f} %"
    out = []
    f, l = old_gain("semi", last("seq-fft")), old_gain("semi", last("seq-lora"))
    out.append(say("Sequential FFT degrades old knowledge more than sequential LoRA",
                   above(l, f), f"old-knowledge gain FFT {fmt(f)}, LoRA {fmt(l)}"))
    nf, nl = avg_new("semi", last("seq-fft")), avg_new("semi", last("seq-lora"))
    out.append(say("Sequential LoRA and FFT are comparable on new knowledge",
                   None if nf is None or nl is None else abs(nf - nl) < 0.1,
                   f"final new-task average FFT {num(nf)}, LoRA {num(nl)}"))
    worst = []
    for prefix in ("seq-fft", "seq-lora"):
        t = (reports.get(prefix) or {}).get("transfer") or {}
        rel = [x for x in (t.get("relative_bwt") or [])[:-1] if x is not None]
        if rel:
            worst.append(min(rel))
    out.append(say("Later tasks can wipe out earlier ones (a relative BWT of −40 % or worse on some task)",
                   None if not worst else min(worst) <= -0.4, f"worst relative BWT {fmt(min(worst) if worst else None)}"))
    bl, b05, b5 = bwt("seq-lora"), bwt("olora-0.5"), bwt("olora-5")
    out.append(say("O-LoRA forgets less than LoRA",
                   above(b05, bl), f"BWT LoRA {fmt(bl)}, O-LoRA λ=0.5 {fmt(b05)}, λ=5 {fmt(b5)}"))
    semi = {m: avg_new("semi", m) for m in ["moe-fft", "moe-fft-rt", "moe-lora", "moe-lora-rt", "merge-linear",
                                              "merge-ties", "merge-dare", last("olora-0.5")]}
    best_moe = max([v for k, v in semi.items() if k.startswith("moe") and v is not None], default=None)
    others = [v for k, v in semi.items() if not k.startswith("moe") and v is not None]
    out.append(say("Semi-cooperative: MoE mixing is best overall",
                   above(best_moe, max(others, default=None) if others else None),
                   ", ".join(f"{k} {num(v)}" for k, v in semi.items())))
    lin, ties, dare = semi["merge-linear"], semi["merge-ties"], semi["merge-dare"]
    out.append(say("TIES/DARE merges keep new knowledge worse than plain averaging",
                   None if None in (lin, ties, dare) else above(lin, max(ties, dare)),
                   f"linear {num(lin)}, TIES {num(ties)}, DARE-TIES {num(dare)}"))
    rl, jl = avg_new("full", last("rep-lora")), avg_new("full", "joint-lora")
    rf, jf = avg_new("full", last("rep-fft")), avg_new("full", "joint-fft")
    both = [above(rl, jl, 0.02), above(rf, jf, 0.02)]
    out.append(say("Fully-cooperative: sequential with 10 % replay is as good as joint training or better (within 0.02)",
                   None if None in both else ("tie" if both == ["tie", "tie"] else all(x in (True, "tie") for x in both)),
                   f"LoRA-Rep {num(rl)} vs Joint-LoRA {num(jl)}; FFT-Rep {num(rf)} vs Joint-FFT {num(jf)}"))
    gains = {"LoRA-Rep": old_gain("full", last("rep-lora")), "Joint-LoRA": old_gain("full", "joint-lora"),
             "Joint-FFT": old_gain("full", "joint-fft"), "FFT-Rep": old_gain("full", last("rep-fft")),
             "LoRA": l, "FFT": f}
    known = {k: v for k, v in gains.items() if v is not None}
    rivals = [v for k, v in known.items() if k != "LoRA-Rep"]
    out.append(say("LoRA with replay retains old knowledge best",
                   above(known.get("LoRA-Rep"), max(rivals) if rivals else None),
                   ", ".join(f"{k} {fmt(v)}" for k, v in gains.items())))
    return out


if __name__ == "__main__":
    main()
