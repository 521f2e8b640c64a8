#!/usr/bin/env python3
"""Writes a CSV stream of rounded sensor readings to stdout.

    python3 scripts/gen_rounded.py lattice N SEED > int2d.csv
    python3 scripts/gen_rounded.py sensors N SEED > sensors.csv

`lattice`: 2-D points round(N(c, 0.6²)) around the centres (0, 0), (6, 2),
(2, 7), equal weights. `sensors`: three integer channels of a 4-component
mixture (some channels coarse against their spread: std 0.3 to 0.5) and a
status channel that is 0 nine times in ten and 1 to 3 otherwise. Python's
own random module only; a developer's tool (the tests do not use it).
"""
import random
import sys

kind, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
out = sys.stdout
if kind == "lattice":
    centres = [(0.0, 0.0), (6.0, 2.0), (2.0, 7.0)]
    for _ in range(n):
        cx, cy = rng.choice(centres)
        out.write(f"{round(rng.gauss(cx, 0.6))},{round(rng.gauss(cy, 0.6))}\n")
elif kind == "sensors":
    means = [(10, 20, 5), (14, 26, 8), (6, 24, 2), (12, 15, 11)]
    stds = [(0.4, 2.0, 1.5), (0.3, 1.0, 2.0), (1.2, 0.5, 1.0), (2.0, 1.5, 0.45)]
    for _ in range(n):
        j = rng.randrange(4)
        x = [round(rng.gauss(m, s)) for m, s in zip(means[j], stds[j])]
        status = 0 if rng.random() < 0.9 else rng.randint(1, 3)
        out.write(",".join(str(v) for v in x + [status]) + "\n")
else:
    sys.exit("give lattice or sensors")
