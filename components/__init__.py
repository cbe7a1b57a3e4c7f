"""textclf-pipelines: Kubeflow/KServe-native pipelines for transformer text classifiers.

The import package ``textclf`` lives in ``components/`` (one sub-package per pipeline stage); ``textclf.pipelines``
lives in ``pipelines/``. Importing this package is cheap: stages import their heavy dependencies lazily.
"""

__version__ = "0.1.0"
