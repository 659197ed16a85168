"""Everything that runs on Ray: ``raydistill search`` (``run``: Tune + Optuna + ASHA), one trial
as a Ray Train run (``trial``), search-space files (``space``), references, confirmation and
post-evaluation of stopped trials, ``train --config`` (``single``), ``plan`` and ``study``.
"""
