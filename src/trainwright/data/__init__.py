"""Data handling: collators, column preparation and samplers."""
from .collator import DataCollatorWithPadding, default_data_collator

__all__ = ["DataCollatorWithPadding", "default_data_collator"]
