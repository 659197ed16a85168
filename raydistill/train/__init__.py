"""The distillation loop in plain PyTorch, without Ray or MLflow (``loop``), its batches
(``data``) and masks (``masking``), and the embedded teacher's pretraining (``pretrain``).
"""
