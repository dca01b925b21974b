"""``python -m i2m2_ray.tracking upload OUTPUT_DIR``: log a finished pipeline's saved results
to MLflow, e.g. once a tracking server that was down is back. An entry point: it sits above
the pipeline, which the tracking package itself never imports."""

from __future__ import annotations

import argparse

from i2m2_ray.pipeline import upload
from i2m2_ray.tracking import TRACKING_ENV


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m i2m2_ray.tracking")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload a finished pipeline's saved results")
    up.add_argument("output_dir")
    up.add_argument("--tracking-uri", help=f"default: ${TRACKING_ENV}, else the output dir's sqlite store")
    args = p.parse_args(argv)
    parent = upload(args.output_dir, args.tracking_uri)
    print(f"uploaded {args.output_dir} as parent run {parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
