"""Build the ``.mat`` triple of MIRFlickr-25K, NUS-WIDE or MS-COCO from the raw downloads, or list files from it.

    python tools/prepare_data.py mirflickr --raw /data/raw/mirflickr --out data/mirflickr
    python tools/prepare_data.py nuswide --raw /data/raw/NUS-WIDE --out data/nuswide --not-used-ids not-used-id.txt
    python tools/prepare_data.py coco --raw /data/raw/coco2017 --out data/coco
    python tools/prepare_data.py lists --triple data/nuswide --caption-file caption.txt --dataset nuswide \
        --out data/nuswide_21 --relative-to data/nuswide_21/NUS-WIDE

Prints what was kept and dropped and why; the written folder is what ``configs/_base_/datasets/*.yaml`` read
(``lists`` writes the DeepHash-pytorch list files of the single-modal ``image_list`` dataset).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from dataset.builders import MISSING_IMAGES, build_coco, build_image_lists, build_mirflickr, build_nuswide  # noqa: E402
from dataset.builders.coco import DEFAULT_SPLITS  # noqa: E402
from dataset.builders.mirflickr import LABEL_ORDERS  # noqa: E402
from dataset.builders.nuswide import NOT_USED_OFFSET, ROW_FILTERS  # noqa: E402
from dataset.records import DatasetError, PairedData  # noqa: E402
from dataset.splits import DATASETS, SPLIT_PRESETS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--raw", required=True, help="folder of the raw download")
    common.add_argument("--out", required=True, help="folder to write index.mat, caption.mat/.txt, label.mat")
    common.add_argument("--missing-images", choices=MISSING_IMAGES, default="error",
                        help="what to do with rows whose image file is absent")

    mir = sub.add_parser("mirflickr", parents=[common], help="MIRFlickr-25K")
    mir.add_argument("--images", help="the mirflickr image folder, if not <raw>/mirflickr[25k/mirflickr]")
    mir.add_argument("--annotations", help="the mirflickr25k_annotations_v080 folder, if not under --raw")
    mir.add_argument("--label-order", choices=LABEL_ORDERS, default="sorted",
                     help="label column order: sorted names, or os.listdir like the reference builder")

    nus = sub.add_parser("nuswide", parents=[common], help="NUS-WIDE (21 concepts)")
    nus.add_argument("--images", help="the image root (concept folders), if not <raw>/Flickr")
    nus.add_argument("--used-labels", help="used_label.txt (default: found under --raw, else the built-in 21)")
    nus.add_argument("--not-used-ids", help="not_used_id.txt (default: found under --raw)")
    nus.add_argument("--not-used-offset", type=int, default=NOT_USED_OFFSET,
                     help="added to each not-used value to get the 0-based row: -2 QinLab (default), 0 DCHMT")
    nus.add_argument("--row-filter", choices=ROW_FILTERS, default="not_used_ids",
                     help="drop the listed rows (reference) or the rows without any used label")

    coco = sub.add_parser("coco", parents=[common], help="MS-COCO (2017 by default)")
    coco.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS), help="image splits in row order")

    lists = sub.add_parser("lists", help="DeepHash-pytorch list files (single-modal runs) from a prepared triple")
    lists.add_argument("--triple", required=True, help="folder of index.mat, the caption file and label.mat")
    lists.add_argument("--out", required=True, help="folder to write test.txt, train.txt, database.txt")
    lists.add_argument("--caption-file", default="caption.mat", help="caption.mat, or caption.txt (NUS-WIDE)")
    lists.add_argument("--image-root", help="local image folder, if the triple's stored paths are not")
    lists.add_argument("--path-keep", type=int, help="trailing components of stored paths kept under --image-root")
    lists.add_argument("--split", choices=list(SPLIT_PRESETS), default="classic", help="split preset")
    lists.add_argument("--dataset", dest="split_dataset", choices=DATASETS, help="picks the preset's sizes and seed")
    lists.add_argument("--query-num", type=int, help="queries (overrides the preset)")
    lists.add_argument("--train-num", type=int, help="training images (overrides the preset)")
    lists.add_argument("--seed", type=int, help="split seed (overrides the preset)")
    lists.add_argument("--relative-to", help="write image paths relative to this folder (the image_root of the "
                                             "config); absolute otherwise")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        data = build(args)
    except (DatasetError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    for line in data.meta["report"]:
        print(line)


def build(args: argparse.Namespace) -> PairedData:
    """Run the builder the sub-command names."""
    if args.dataset == "mirflickr":
        return build_mirflickr(args.raw, args.out, image_dir=args.images, annotation_dir=args.annotations,
                               label_order=args.label_order, missing_images=args.missing_images)
    if args.dataset == "nuswide":
        return build_nuswide(args.raw, args.out, image_dir=args.images, used_labels=args.used_labels,
                             not_used_ids=args.not_used_ids, not_used_offset=args.not_used_offset,
                             row_filter=args.row_filter, missing_images=args.missing_images)
    if args.dataset == "coco":
        return build_coco(args.raw, args.out, splits=tuple(args.splits), missing_images=args.missing_images)
    return build_image_lists(args.triple, args.out, caption_file=args.caption_file, image_root=args.image_root,
                             path_keep=args.path_keep, split=args.split, dataset=args.split_dataset,
                             query_num=args.query_num, train_num=args.train_num, seed=args.seed,
                             relative_to=args.relative_to)


if __name__ == "__main__":
    main()
