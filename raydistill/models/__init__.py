"""Students and heads in plain PyTorch. The HuBERT encoder's blocks are raydistill's own, in
torchaudio's state-dict layout (``components``); architectures and presets (``config``); the
encoder with every hidden state and attention reuse (``hubert``); the BiLSTM student
(``lstm``); what a method trains (``student``); training-only heads (``heads``); checkpoints
that carry their config (``checkpoint``); Hugging Face conversion both ways (``hf``); MACs per
second of audio (``macs``).
"""
