"""Lay out a datalist split as a flat MONAI Label studies folder: ``<case>_<key>.nii.gz`` per modality.

MONAI Label's local datastore lists one folder of images; the synthesis app finds a case's other modalities
from the request's image id (``phantom_001_t1`` -> ``phantom_001_t2``). Files are symbolic links (``--copy``
copies them). Example::

    python serving/monailabel/make_studies.py --datalist data/demo/datalist.json --split test \\
        --keys t1,t2,adc,brain_mask --output studies/demo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

__all__ = ["make_studies", "main"]


def make_studies(datalist: str, split: str, keys: list[str], output: str, copy: bool = False) -> list[Path]:
    """Link (or copy) ``keys`` of every entry of ``datalist[split]`` to ``output/<subject>_<key><ext>``.

    Raises:
        ValueError: the split is missing, an entry lacks ``subject`` or a key, or a file does not exist.
    """
    base = Path(datalist).resolve().parent
    entries = json.loads(Path(datalist).read_text()).get(split)
    if not entries:
        raise ValueError(f"--split: datalist '{datalist}' has no (or an empty) '{split}' list")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in entries:
        for key in keys:
            if "subject" not in entry or key not in entry:
                raise ValueError(f"--keys: entry {entry.get('subject', entry)} has no 'subject' or '{key}'")
            src = (base / entry[key]).resolve()
            if not src.is_file():
                raise ValueError(f"--datalist: file '{src}' does not exist")
            ext = ".nii.gz" if src.name.endswith(".nii.gz") else src.suffix
            dst = out / f"{Path(entry['subject']).name}_{key}{ext}"
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            if copy:
                shutil.copyfile(src, dst)
            else:
                os.symlink(src, dst)
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datalist", required=True, help="datalist.json (paths relative to its folder)")
    parser.add_argument("--split", default="test", help="datalist key (default: test)")
    parser.add_argument("--keys", required=True, help="comma-separated modality keys, e.g. t1,t2,adc,brain_mask")
    parser.add_argument("--output", required=True, help="the studies folder to write")
    parser.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    args = parser.parse_args(argv)
    written = make_studies(args.datalist, args.split, [k for k in args.keys.split(",") if k], args.output, args.copy)
    print(f"{len(written)} images in {args.output}")  # noqa: T201


if __name__ == "__main__":
    main()
