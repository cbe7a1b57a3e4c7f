"""KFP component: the classical member (thin wrapper around :func:`textclf.classical.train_classical`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def train_classical_op(
    splits: Input[Dataset],
    model_type: str,
    word_ngram_max: int,
    char_ngrams: bool,
    char_ngram_min: int,
    char_ngram_max: int,
    min_df: int,
    sublinear_tf: bool,
    c: float,
    max_iter: int,
    calibration_folds: int,
    seed: int,
    model: Output[Model],
    member_logits: Output[Dataset],
) -> float:
    """Fit TF-IDF n-grams and a linear model on the train split; keep its validation and train logits.

    The defaults of every parameter are :class:`textclf.config.ClassicalConfig`'s. The test split is not read: the
    evaluate component scores it (``textclf.classical.split_logits``).

    Args:
        splits: Output of the validate/split component.
        model_type: ``linear_svm`` (probabilities by sigmoid calibration) or ``logistic_regression``.
        word_ngram_max: Word n-grams from 1 to this length.
        char_ngrams: Also use character n-grams inside word boundaries.
        char_ngram_min: Shortest character n-gram.
        char_ngram_max: Longest character n-gram.
        min_df: Drop terms found in fewer training texts than this.
        sublinear_tf: ``1 + log(tf)`` instead of the raw count.
        c: Inverse L2 regularisation strength; 0 picks the model's default.
        max_iter: Most solver iterations.
        calibration_folds: Folds of the SVM's sigmoid calibration.
        seed: Seed of the SVM solver.
        model: Output directory: ``model.skops`` (no pickle), ``labels.json``, ``classical_metadata.json``.
        member_logits: Output directory: ``validation_logits.parquet`` and ``train_logits.parquet``, columns ``row``,
            ``label``, ``logit_<label>`` and ``p_<label>`` (the train file is what a student is distilled from).

    Returns:
        The validation accuracy.
    """
    from textclf.classical import train_classical
    from textclf.config import ClassicalConfig

    config = ClassicalConfig(
        model=model_type, word_ngram_max=int(word_ngram_max), char_ngrams=bool(char_ngrams),
        char_ngram_min=int(char_ngram_min), char_ngram_max=int(char_ngram_max), min_df=int(min_df),
        sublinear_tf=bool(sublinear_tf), c=float(c), max_iter=int(max_iter), calibration_folds=int(calibration_folds),
        seed=int(seed),
    )
    result = train_classical(splits.path, config, model.path, member_logits.path)
    model.metadata.update(
        {key: value for key, value in result.summary.items() if isinstance(value, (int, float, str, bool))}
    )
    model.metadata["framework"] = "scikit-learn"
    member_logits.metadata["validation_rows"] = result.summary["validation_rows"]
    return float(result.summary["validation_accuracy"])
