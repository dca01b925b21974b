"""Predict with a trained I2M2 model on new files in the dataset's real format; one CSV row per
sample (ids, every class's probability per head, the predicted class).

From a pipeline's output folder (its checkpoints/<model>.pt):
    python experiments/predict.py --run outputs/avmnist --data-dir /data/avmnist --out predictions.csv
From MLflow (a pipeline's run, or a model's run):
    python experiments/predict.py --run runs:/<run_id> --tracking-uri sqlite:///outputs/avmnist/mlflow.db \
        --data-dir /data/avmnist --out predictions.csv
Without a modality (its files need not exist), scored against the labels in the files:
    python experiments/predict.py --run outputs/mimic --data-dir im.npz --modalities timeseries --score --out p.csv
"""

from __future__ import annotations

import sys

from i2m2_ray.cli.predict import main as predict_main


def main() -> None:
    sys.exit(predict_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
