"""CI's regression check of the training pipeline: the README's main job, shortened to 1,000
conformers of the embedded set and 3 epochs (seed 0), must end with held-out errors in a band
around what it gave when the band was set. Reads `hipnnts eval --json` on standard input.

    hipnnts train --max-conformers 1000 --epochs 3 --out RUN --no-progress
    hipnnts eval RUN/best.pt --json | python3 .ci/check_main_job.py

Measured on 2026-12-01 on the project's 2-core AMD EPYC machine (torch 2.13.0 CPU) with the defaults
of issue 17 (cosine learning-rate schedule, self energies refitted every epoch, learning rate 4e-3,
force weight 4): test force MAE 12.286 and energy MAE 12.550, the same to three decimals with 1 or 2
threads. The zero-force baseline is 25.4. Changed training on the same day falls outside the band:
learning rate 2e-3 (14.80 / 14.00), force weight 1 (16.49 / 14.65), and the earlier defaults with both
(17.77 / 15.47, the band before this one, which also held with AVX2 kernels and `--backend
reference`); then, half that learning rate, twice the batch, no force term and the plateau schedule
were outside as well, while no hierarchicality term and no refit stayed inside, so this check does
not guard those two (tests/test_training.py does). A change that moves training out of the band on
purpose sets a new band here, with its measurement.
"""
import json
import sys

EXPECTED = {"force_mae": 12.29, "energy_mae": 12.55}  #: kcal/mol/Å, kcal/mol
TOLERANCE = {"force_mae": 0.03, "energy_mae": 0.05}  #: relative


def main() -> int:
    result = json.load(sys.stdin)
    failures = []
    for key, expected in EXPECTED.items():
        low, high = expected * (1 - TOLERANCE[key]), expected * (1 + TOLERANCE[key])
        ok = low <= result[key] <= high
        verdict = "ok" if ok else "OUT"
        print(f"shortened main job: test {key} {result[key]:.3f}, band [{low:.2f}, {high:.2f}]: {verdict}")
        failures += [] if ok else [key]
    if failures:
        print(f"the shortened main job left its band ({', '.join(failures)}): training changed; see "
              ".ci/check_main_job.py")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
