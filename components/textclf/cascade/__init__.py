"""Cascade stage: a cheap stage 1 and a transformer stage 2 with a confidence threshold chosen on validation."""

from textclf.cascade.cascade import CascadeResult, build_cascade, choose_threshold, score_stage

__all__ = ["CascadeResult", "build_cascade", "choose_threshold", "score_stage"]
