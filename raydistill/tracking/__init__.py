"""MLflow tracking: the only package that imports ``mlflow``.

``mlflow.py`` opens a store (``client_for``, ``open_experiment``), names the tags and params that
find runs again (``KIND``, ``SEARCH_ID``, ``CONFIRMED`` …), holds the queries (``trial_runs``,
``find_run``, ``ranked``, ``run_config``) and writes a search's runs (``SearchTracker``: the
search run, its trial runs, stopped trials' evaluations, confirmations, references);
``tune_callback.py`` mirrors every Ray Tune trial into its run.

The boundary is the import, not every call: the modules that read or write runs beyond that
take the ``MlflowClient`` these functions return and call its methods themselves —
``report/`` (``collect.py`` searches a search's runs, reads metric histories and its
``search_space.yaml``; ``__init__.py`` logs the report and sets the run's description),
``export.py`` (searches trial runs, downloads the best student, reads the search run's params),
``search/confirm.py`` (re-reads runs, downloads students), ``commands/train.py`` (``train
--config``'s one run: create, log, terminate), ``commands/study.py`` and ``report/study_table.py``
(the study's tag, reference runs, the table as an artifact). Trials never talk to MLflow;
the driver does.
"""
