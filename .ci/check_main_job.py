"""CI's regression check of the training pipeline: the README's main job, shortened to 1,000
conformers of the embedded set and 3 epochs (seed 0), must end with held-out errors in a band
around what it gave when the band was set. Reads `hipnnts eval --json` on standard input.

    hipnnts train --max-conformers 1000 --epochs 3 --out RUN --no-progress
    hipnnts eval RUN/best.pt --json | python3 .ci/check_main_job.py

Measured on 2026-12-01 on the project's 2-core AMD EPYC machine (torch 2.13.0 CPU) with the defaults
of issue 17 (cosine learning-rate schedule, self energies refitted every epoch): test force MAE
17.766 and energy MAE 15.469, the same to three decimals with 1 or 2 threads, with AVX2 kernels
(ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2) and with
`--backend reference`. (Three epochs of a cosine schedule anneal fast, so this short job ends
higher than the 14.75 the plateau schedule gave; the full job ends lower.) The zero-force baseline
is 25.4. Changed training on the same day: half the learning rate (force MAE 18.78), twice the batch
(19.02), no force term (25.49) and the plateau schedule (15.53) fall outside the band; no
hierarchicality term (17.34 / 15.31) and no refit (17.71 / 15.06) stay inside it, so this check
does not guard those two (tests/test_training.py does). A change that moves training out of the
band on purpose sets a new band here, with its measurement.
"""
import json
import sys

EXPECTED = {"force_mae": 17.77, "energy_mae": 15.47}  #: kcal/mol/Å, kcal/mol
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
