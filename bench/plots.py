"""gnuplot PNGs and the markdown summary drawn from the parts' results."""

from benchlib import RESULTS, gnuplot, machine_line

PNG = "set terminal pngcairo size 900,480 font 'DejaVu Sans,10'\n"


def _dat(name, header, lines):
    path = RESULTS / name
    path.write_text("# " + header + "\n" + "\n".join(lines) + "\n")
    return name


def _policy_plot(rows):
    lines = []
    for r in rows:
        label = f"{r['server']}/{r['mode']}/c{r['connections']}"
        lines.append(f"\"{label}\" {r['req_per_s']} {r['p50_ms']} {r['p90_ms']} {r['p99_ms']}")
    dat = _dat("policy.dat", "label req_per_s p50_ms p90_ms p99_ms", lines)
    return gnuplot("policy.gp", PNG + f"""set output 'policy.png'
set multiplot layout 1,2 title 'Policy service (wrk, Dovecot-shaped bodies)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -35 scale 0
set grid ytics
set key top left
set ylabel 'requests/s'
set yrange [0:*]
plot '{dat}' using 2:xtic(1) title 'req/s' lc rgb '#3b73b9'
set ylabel 'latency (ms)'
set logscale y
set yrange [0.05:*]
plot '{dat}' using 3:xtic(1) title 'p50' lc rgb '#6aa84f', \\
     '' using 4 title 'p90' lc rgb '#f1c232', \\
     '' using 5 title 'p99' lc rgb '#cc0000'
unset multiplot
""")


def _auth_plot(rows):
    lines = [f"\"{r['config']}/{r['path']}\" {r['p50_ms']} {r['p90_ms']} {r['p99_ms']}"
             for r in rows]
    dat = _dat("auth.dat", "label p50_ms p90_ms p99_ms", lines)
    return gnuplot("auth.gp", PNG + f"""set output 'auth.png'
set title 'One authentication through Dovecot auth (auth-client socket, sequential)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set grid ytics
set ylabel 'latency (ms)'
set yrange [0:*]
plot '{dat}' using 2:xtic(1) title 'p50' lc rgb '#6aa84f', \\
     '' using 3 title 'p90' lc rgb '#f1c232', \\
     '' using 4 title 'p99' lc rgb '#cc0000'
""")


def _pam_plot(rows):
    lines = [f"\"{r['stack']}/{r['path']}\" {r['calls_per_s']} {r['p50_ms']} {r['p99_ms']}"
             for r in rows]
    dat = _dat("pam.dat", "label calls_per_s p50_ms p99_ms", lines)
    return gnuplot("pam.gp", PNG + f"""set output 'pam.png'
set multiplot layout 1,2 title 'pam_authenticate() per call'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -35 scale 0
set grid ytics
set yrange [0:*]
set ylabel 'calls/s'
plot '{dat}' using 2:xtic(1) title 'calls/s' lc rgb '#3b73b9'
set ylabel 'latency (ms)'
plot '{dat}' using 3:xtic(1) title 'p50' lc rgb '#6aa84f', \\
     '' using 4 title 'p99' lc rgb '#cc0000'
unset multiplot
""")


def _attack_plot(rows):
    prots = []
    for r in rows:
        if r["protection"] not in prots:
            prots.append(r["protection"])
    scen = []
    for r in rows:
        if r["scenario"] not in scen:
            scen.append(r["scenario"])
    get = {(r["scenario"], r["protection"]): r for r in rows}

    def table(name, value):
        lines = []
        for sc in scen:
            vals = [str(value(get[(sc, p)])) if (sc, p) in get else "0" for p in prots]
            lines.append(f"\"{sc}\" " + " ".join(vals))
        return _dat(name, "scenario " + " ".join(prots), lines)

    checks = table("attack-checks.dat", lambda r: r["attacker_checks"])
    hurt = table("attack-legit.dat", lambda r: r["legit_refused"] + r["legit_delayed"])
    colors = ["#cc0000", "#e69138", "#3b73b9", "#6aa84f", "#999999"]

    def plot(dat):
        parts = []
        for i, p in enumerate(prots):
            col = f"{i + 2}:xtic(1)" if i == 0 else f"{i + 2}"
            parts.append(f"'{dat}' using {col} title '{p}' lc rgb '{colors[i % len(colors)]}'")
        return "plot " + ", \\\n     ".join(parts) + "\n"

    return gnuplot("attack.gp", PNG.replace("900,480", "1000,480") + f"""set output 'attack.png'
set multiplot layout 1,2 title 'Simulated attacks on Dovecot (same run, same machine)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set grid ytics
set yrange [0:*]
set key top right font ',9'
set ylabel 'password checks the attacker (phone) got'
""" + plot(checks) + """set key top left
set ylabel 'legitimate logins refused or delayed > 1 s'
""" + plot(hurt) + "unset multiplot\n")


def draw(results):
    problems = []
    for part, fn in (("policy", _policy_plot), ("auth", _auth_plot),
                     ("pam", _pam_plot), ("attack", _attack_plot)):
        rows = results.get(part)
        if rows:
            err = fn(rows)
            if err:
                problems.append(f"{part}: {err}")
    return problems


def _table(rows, cols):
    out = ["| " + " | ".join(h for h, _ in cols) + " |",
           "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(k, "")) for _, k in cols) + " |")
    return "\n".join(out)


def summary(results, m, failed, quick=False):
    s = [f"# authbrake benchmark results",
         "",
         f"Machine: {machine_line(m)}.  ",
         f"Source: `{m['git']}`, run {m['date']}"
         + (" — **QUICK smoke run, not representative**" if quick else "") + ".",
         ""]
    if failed:
        s += [f"Parts that could not run: {', '.join(failed)} (see run.log).", ""]
    if results.get("policy"):
        s += ["## Policy service (wrk + bench/policy.lua)", "",
              "![policy](policy.png)", "",
              _table(results["policy"], [
                  ("server", "server"), ("body", "mode"), ("conns", "connections"),
                  ("s", "duration_s"), ("req/s", "req_per_s"), ("p50 ms", "p50_ms"),
                  ("p90 ms", "p90_ms"), ("p99 ms", "p99_ms"), ("allow", "allow"),
                  ("tarpit", "tarpit"), ("reject", "reject"),
                  ("report ok", "report_ok"), ("errors", "http_error")]), ""]
    if results.get("auth"):
        s += ["## One authentication through Dovecot's auth process", "",
              "![auth](auth.png)", "",
              _table(results["auth"], [
                  ("config", "config"), ("path", "path"), ("N", "n"),
                  ("p50 ms", "p50_ms"), ("p90 ms", "p90_ms"), ("p99 ms", "p99_ms"),
                  ("added p50 ms", "added_p50_ms"), ("added p99 ms", "added_p99_ms"),
                  ("ok", "ok")]), ""]
    if results.get("pam"):
        s += ["## PAM: pam_authenticate()", "", "![pam](pam.png)", "",
              _table(results["pam"], [
                  ("stack", "stack"), ("path", "path"), ("N", "n"),
                  ("calls/s", "calls_per_s"), ("p50 ms", "p50_ms"),
                  ("p99 ms", "p99_ms"), ("results", "results")]), ""]
    if results.get("attack"):
        s += ["## Simulated attacks on Dovecot", "", "![attack](attack.png)", "",
              _table(results["attack"], [
                  ("scenario", "scenario"), ("protection", "protection"),
                  ("s", "seconds"), ("attempts", "attacker_attempts"),
                  ("password checks", "attacker_checks"),
                  ("checks/min at end", "checks_per_min_at_end"),
                  ("accounts broken", "accounts_broken"),
                  ("legit logins", "legit_total"), ("refused", "legit_refused"),
                  ("delayed >1s", "legit_delayed"), ("legit p50 ms", "legit_p50_ms"),
                  ("legit p99 ms", "legit_p99_ms"),
                  ("added p50 ms", "legit_added_p50_ms"), ("note", "note")]), ""]
    return "\n".join(s) + "\n"
