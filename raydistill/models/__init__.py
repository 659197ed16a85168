"""Students and heads in plain PyTorch: HuBERT encoders built on torchaudio with every hidden
state exposed (``hubert``), the BiLSTM student (``lstm``), training-only heads (``heads``),
checkpoints that carry their config (``checkpoint``) and MACs per second of audio (``macs``).
"""
