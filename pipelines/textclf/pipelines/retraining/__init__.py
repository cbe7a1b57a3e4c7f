"""The retraining pipeline (triggered by drift, new labelled data or a schedule)."""
