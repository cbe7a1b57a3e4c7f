"""The classical bundle as the server sees it: a TF-IDF linear model (scikit-learn) saved with skops, never pickled.

The components' classical stage (``textclf.classical``) writes the bundle (:data:`CLASSICAL_MODEL_FILE`,
:data:`CLASSICAL_METADATA_FILE`, ``labels.json``) and scores texts with the functions defined here, so a text gets
the same logits in training, in the comparison and behind the server. Needs scikit-learn and skops, not torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textclf.serving.bundle import BundleError, check_normalisation, checked_labels, metadata_temperature, read_bundle_json
from textclf.serving.codec import softmax
from textclf.serving.contract import CLASSICAL_METADATA_FILE, CLASSICAL_MODEL_FILE, LABELS_FILE
from textclf.provenance import sha256_file
from textclf.text import TextProfile, normalise_text

#: Types in :data:`CLASSICAL_MODEL_FILE` that skops does not trust by itself (it trusts scikit-learn's public
#: estimators, numpy and scipy): the text preprocessor and the SVM calibration's private classes. The loader trusts
#: these and refuses a file holding any other.
TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "textclf.serving.classical.preprocess",
    "textclf.serving.classical.preprocess_abstract",
)
#: Where :func:`preprocess` lived before it moved here; files saved then name it so (loadable where the components
#: distribution is installed, which re-exports it under that name).
LEGACY_TRUSTED_TYPES = ("textclf.classical.classical.preprocess",)
#: Probabilities are floored here before their log is taken as the calibrated SVM's logits.
PROBABILITY_FLOOR = 1e-12


def preprocess(text: str) -> str:
    """The classical model's view of a raw text: :func:`textclf.text.normalise_text` (the normalisation training and
    serving apply to every model), then lower case. The vectorisers' ``preprocessor`` (replacing scikit-learn's
    default, which only lower-cases)."""
    return normalise_text(text).lower()


def preprocess_abstract(text: str) -> str:
    """:func:`preprocess` under the ``abstract`` text profile (a model trained on scientific abstracts saves this
    function as its vectorisers' ``preprocessor``, so the served model cleans requests as training did)."""
    return normalise_text(text, TextProfile.ABSTRACT).lower()


#: The classical vectorisers' ``preprocessor`` per text profile (what a model trained on that profile saves).
PREPROCESSORS = {TextProfile.NEWS: preprocess, TextProfile.ABSTRACT: preprocess_abstract}


def _features(model: Any, texts: list[str]) -> Any:
    """The pipeline's ``features`` step applied to ``texts``: what ``FeatureUnion.transform`` returns, without its
    per-call ``joblib.Parallel`` dispatch (most of a single text's cost): each vectoriser's output, stacked."""
    from scipy import sparse
    from sklearn.pipeline import FeatureUnion

    features = model.named_steps["features"]
    if not isinstance(features, FeatureUnion) or features.transformer_weights:
        return features.transform(texts)
    parts = [step.transform(texts) for _, step in features.transformer_list if step not in ("drop", None)]
    return parts[0] if len(parts) == 1 else sparse.hstack(parts, format="csr")


def classical_logits(model: Any, texts: list[str]) -> np.ndarray:
    """The fitted pipeline's logits: ``softmax(logits)`` is its ``predict_proba``.

    Runs the pipeline's two steps directly (:func:`_features`, then the classifier) under scikit-learn's
    ``assume_finite`` / ``skip_parameter_validation`` settings: the same numbers as ``Pipeline.predict_proba``
    (the tests compare them) at a fraction of the per-call overhead that dominates a single text.

    Args:
        model: A fitted scikit-learn pipeline (``features`` then ``classifier``), e.g. from
            :meth:`ClassicalBundle.load_model`.
        texts: Raw texts (preprocessed inside the pipeline).

    Returns:
        float32 ``[len(texts), n_labels]``, columns in label-id order. Logistic regression: its decision values
        (for two classes, one value ``d`` per text: logits ``[0, d]``). Calibrated SVM: the logs of its calibrated
        probabilities (floored at :data:`PROBABILITY_FLOOR`).
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression

    texts = list(texts)
    classifier = model.named_steps["classifier"]
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        features = _features(model, texts)
        if not isinstance(classifier, LogisticRegression):
            probabilities = np.asarray(classifier.predict_proba(features), dtype=np.float64)
            return np.log(np.maximum(probabilities, PROBABILITY_FLOOR)).astype(np.float32)
        scores = np.asarray(classifier.decision_function(features), dtype=np.float32)
    if scores.ndim == 1:
        scores = np.column_stack([np.zeros_like(scores), scores])
    return scores


@dataclass(frozen=True)
class ClassicalBundle:
    """A checked classical bundle.

    Attributes:
        root: The bundle directory.
        labels: Class names in label-id order.
        metadata: :data:`CLASSICAL_METADATA_FILE`'s content.
        model_sha256: The model file's sha256 (checked against the metadata's).
        temperature: Calibration temperature ``T`` from the metadata (1.0 when it has none).
    """

    root: Path
    labels: tuple[str, ...]
    metadata: dict[str, Any]
    model_sha256: str
    temperature: float = 1.0

    @property
    def model_version(self) -> str:
        """``"<git commit[:12]>-<sha256[:12]> of the model file"``, as for a transformer bundle."""
        return f"{str(self.metadata.get('git_commit') or 'unknown')[:12]}-{self.model_sha256[:12]}"

    def load_model(self) -> Any:
        """The fitted scikit-learn pipeline, trusting only skops' defaults, :data:`TRUSTED_TYPES` and
        :data:`LEGACY_TRUSTED_TYPES`.

        Raises:
            BundleError: The file holds a type outside those, or cannot be read.
        """
        import skops.io as sio
        from skops.io.exceptions import UntrustedTypesFoundException

        path = self.root / CLASSICAL_MODEL_FILE
        try:
            return sio.load(path, trusted=[*TRUSTED_TYPES, *LEGACY_TRUSTED_TYPES])
        except UntrustedTypesFoundException as exc:
            raise BundleError(f"{path}: refused to load: {exc}") from exc
        except (ImportError, AttributeError) as exc:
            raise BundleError(f"{path}: cannot load ({exc}); was it saved by another textclf release?") from exc


def load_classical_bundle(root: str | Path) -> ClassicalBundle:
    """Read and check a classical bundle (its files, the model file's sha256, the normalisation, labels, ``T``).

    Args:
        root: The classical stage's model directory.

    Returns:
        The bundle description (the model itself: :meth:`ClassicalBundle.load_model`).

    Raises:
        BundleError: The directory or a file is missing, the model file's sha256 differs from the one recorded at
            training, the model was trained with another text normalisation than this server applies, the labels
            are malformed, or the temperature is not a finite number > 0.
    """
    root = Path(root)
    path = root / CLASSICAL_MODEL_FILE
    if not path.is_file() or not (root / CLASSICAL_METADATA_FILE).is_file():
        raise BundleError(
            f"{root}: {CLASSICAL_MODEL_FILE} or {CLASSICAL_METADATA_FILE} not found; not a classical model"
        )
    metadata = read_bundle_json(root / CLASSICAL_METADATA_FILE)
    labels = checked_labels(read_bundle_json(root / LABELS_FILE).get("labels"), root / LABELS_FILE)
    digest = sha256_file(path)
    if digest != metadata.get("model_sha256"):
        raise BundleError(
            f"{path}: sha256 {digest[:12]}... differs from the {metadata.get('model_sha256')!r} recorded at training"
        )
    check_normalisation(metadata, root, "retrain the classical model")
    return ClassicalBundle(
        root=root, labels=labels, metadata=metadata, model_sha256=digest,
        temperature=metadata_temperature(metadata, root / CLASSICAL_METADATA_FILE),
    )


class ClassicalTextClassifier:
    """Scores raw texts with a classical bundle's model: ``softmax(logits / T)``.

    Args:
        model: The fitted pipeline.
        temperature: Calibration temperature ``T`` (> 0).
    """

    def __init__(self, model: Any, temperature: float = 1.0):
        self._model = model
        self.temperature = temperature

    @classmethod
    def from_bundle(cls, bundle: ClassicalBundle, warmup_rounds: int = 1) -> ClassicalTextClassifier:
        """The bundle's model with its temperature, warmed up."""
        classifier = cls(bundle.load_model(), bundle.temperature)
        for _ in range(warmup_rounds):
            classifier.probabilities(["warm up", "a short news headline about markets"])
        return classifier

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Calibrated class probabilities, float32 ``[len(texts), n_labels]``, rows in input order."""
        return softmax(classical_logits(self._model, texts), self.temperature)

