"""Fine-tuning by distillation: the trainer, its regimes and teachers."""
