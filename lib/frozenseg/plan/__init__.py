"""What a run will do before it starts: the datasets and weights found and what each missing one skips or degrades
(``make data-status``), and for a full run its sizes, training runs and an estimate of its length (printed by the
runner before the first notebook; ``make plan``).

    python -m frozenseg.plan status                 # make data-status
    python -m frozenseg.plan run --profile full     # make plan PROFILE=full
"""
