"""Baseline for ``make bench-serve``: what KServe's Hugging Face runtime does for sequence classification.

A ``kserve.Model`` on the same KServe ModelServer that loads the train stage's model with transformers
(``AutoModelForSequenceClassification``, PyTorch fp32), tokenises and runs each request on its own (no batching
across requests, no ONNX) and answers with the same V1 body as the ONNX predictor. Run it as
``python -m textclf.benchmarks.hf_baseline_server --model-dir DIR --http-port PORT``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import kserve
from kserve.errors import InvalidInput

from textclf.text import normalise_text
from textclf.train.train import METADATA_FILE

#: Name under which the baseline is served (``/v1/models/{name}:predict``).
BASELINE_MODEL_NAME = "textclf"


class HuggingFaceBaselineModel(kserve.Model):
    """PyTorch fp32 classifier served one request at a time, like KServe's huggingfaceserver.

    Args:
        name: Served model name.
        model_dir: The train stage's output (safetensors, tokenizer, ``textclf_metadata.json``).
    """

    def __init__(self, name: str, model_dir: Path):
        super().__init__(name)
        self.model_dir = model_dir
        self.model: Any = None
        self.tokenizer: Any = None
        self.labels: tuple[str, ...] = ()
        self.max_length = 128

    def load(self) -> bool:
        """Load tokenizer and model with transformers, then run one warm-up request.

        Returns:
            ``True``.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        metadata = json.loads((self.model_dir / METADATA_FILE).read_text(encoding="utf-8"))
        self.labels = tuple(metadata["labels"])
        self.max_length = int(metadata["max_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).eval()
        self.predict({"instances": ["warm up"]})
        self.ready = True
        return self.ready

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Tokenise and classify one request's texts in PyTorch (synchronously: requests run one after another).

        Args:
            payload: V1 body ``{"instances": ["text", ...]}``.
            headers: Request headers (unused).

        Returns:
            ``{"predictions": [{"label", "label_id", "scores"}]}``.

        Raises:
            InvalidInput: No ``instances`` list of strings.
        """
        import torch

        texts = payload.get("instances") if isinstance(payload, dict) else None
        if not texts or not all(isinstance(text, str) for text in texts):
            raise InvalidInput('expected {"instances": ["text", ...]}')
        encoded = self.tokenizer([normalise_text(text) for text in texts], truncation=True,
                                 max_length=self.max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            probabilities = torch.softmax(self.model(**encoded).logits, dim=-1).tolist()
        predictions = []
        for row in probabilities:
            label_id = max(range(len(row)), key=row.__getitem__)
            predictions.append({"label": self.labels[label_id], "label_id": label_id,
                                "scores": dict(zip(self.labels, row, strict=True))})
        return {"predictions": predictions}


def main(argv: list[str] | None = None) -> None:
    """Serve the baseline until SIGTERM.

    Args:
        argv: ``--model-dir DIR --http-port PORT`` (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m textclf.benchmarks.hf_baseline_server")
    parser.add_argument("--model-dir", type=Path, required=True, help="train stage output directory")
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args(argv)
    if not (args.model_dir / METADATA_FILE).is_file():
        parser.error(f"{args.model_dir}: not a train stage output ({METADATA_FILE} missing)")
    model = HuggingFaceBaselineModel(BASELINE_MODEL_NAME, args.model_dir)
    model.load()
    server = kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1, enable_latency_logging=False)
    for name in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
