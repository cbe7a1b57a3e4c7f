"""KServe serving of textclf bundles: a transformer on ONNX Runtime (CPU), a classical TF-IDF model, a confidence
cascade of the two; a tokenising transformer for Triton on GPU.

Imports nothing from textclf outside this distribution (:mod:`textclf.text`, ``.errors``, ``.provenance``,
``.storage``), and neither torch nor transformers. Start it with
``python -m textclf.serving --model-dir BUNDLE`` or :func:`textclf.serving.server.serve`.

Modules: ``contract`` (the export bundle's file names and ONNX tensors, ``ONNX_SPEC``), ``config``
(``ServingConfig``, ``Precision``), ``bundle`` (reading the export bundle; ``BundleKind``), ``classical`` (the
classical bundle), ``cascade`` (the cascade rule and bundle), ``models`` (loading any bundle kind), ``scores`` (the answers of every model kind), ``inputs``
(request parsing, limits, the request id),
``codec`` (tokenising and response formatting shared by predictor and transformer), ``engine`` (ONNX Runtime),
``batcher`` (micro-batching), ``metrics`` (Prometheus), ``accounting`` (outcomes, latency and the request log of
every request), ``request_log`` (JSON-lines drift log), ``predictor`` (the
``kserve.Model``), ``transformer`` (the Triton transformer), ``server`` (``serve``).
"""
