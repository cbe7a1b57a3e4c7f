"""Validate/split stage: cleaning, duplicate and leakage removal, stratified train/validation split."""

from textclf.validate.validate import SplitResult, validate_and_split

__all__ = ["SplitResult", "validate_and_split"]
