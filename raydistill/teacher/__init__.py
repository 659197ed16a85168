"""Frozen teachers: their shape, which sizes students (``info``), loading one from a raydistill,
torchaudio or Hugging Face file (``sources``), and the MFCC features that are HuBERT iteration
1's targets (``mfcc``).
"""
