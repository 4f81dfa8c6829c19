"""PEFT methods defined by hf_unlearn."""
