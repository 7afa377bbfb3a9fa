"""Medians of the bench scripts' rounds.

A results file holds one line per measured run, tab separated: `keys`
columns naming what ran (target, coding, load...), then its figures.
`medians(path, keys)` gives, for each name (a string with one key column,
else a tuple), the median of each figure over its runs. The scripts print
their own tables and ratios from it:

    python3 - "$results" <<'PY'
    import sys; sys.path.insert(0, "bench"); from medians import medians
    med = medians(sys.argv[1])
    PY
"""
import collections
import statistics


def medians(path, keys=1):
    runs = collections.defaultdict(list)
    with open(path) as results:
        for line in results:
            columns = line.rstrip("\n").split("\t")
            name = columns[0] if keys == 1 else tuple(columns[:keys])
            runs[name].append([float(v) for v in columns[keys:]])
    return {name: tuple(statistics.median(figure) for figure in zip(*rows)) for name, rows in runs.items()}
