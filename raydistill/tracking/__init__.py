"""MLflow tracking, the only place raydistill talks to MLflow: runs found again by their tags
(``mlflow``) and the Ray Tune callback that mirrors every trial into its run (``tune_callback``).
"""
