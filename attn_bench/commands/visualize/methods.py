"""The class-activation methods ``--method`` names: ours -> pytorch-grad-cam's class (no torch import, so that
``visualize --help`` and a bad argument answer at once)."""
METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "eigencam": "EigenCAM", "layercam": "LayerCAM",
           "xgradcam": "XGradCAM", "scorecam": "ScoreCAM", "hirescam": "HiResCAM"}
