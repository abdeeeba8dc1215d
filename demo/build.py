"""Rebuild the demo dataset in this folder from the cxr-sample: ``python demo/build.py [--sample DIR] [--out DIR]``.

Only images whose licences allow redistribution with attribution are taken: the Hannover Medical School COVID-19
images (CC BY 3.0), NIH ChestX-ray14 normals (released for unrestricted use, citation requested) and Kermany et al.
paediatric normals (CC BY 4.0). One image per patient (the one with the smallest sha256), patients taken in sha256
order, so the choice is deterministic. The PNGs are copied byte for byte (8-bit grey, 299x299, well under the size
budget) and renumbered; ``manifest.csv`` keeps the sample's columns and ``SOURCES.md`` credits each source.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SAMPLE = HERE.parents[1] / "shared" / "data" / "cxr-sample"
MAX_BYTES = 6 * 1024 * 1024
# (source, label) -> (licence text the sample's manifest must carry, images wanted)
SELECTION = {
    ("hannover", "COVID"): ("CC BY 3.0", 50),
    ("nih-cxr14", "Normal"): ("unstated in repo; upstream NIH ChestX-ray14: unrestricted use, citation requested", 35),
    ("kermany-pediatric", "Normal"): ("unstated in repo; upstream Kermany et al. 2018: CC BY 4.0", 35),
}
CLASSES = ("COVID", "Normal")

SOURCES_TEMPLATE = """# CXR Review demo dataset

{total} real chest X-rays (PNG, 8-bit grey, 299x299) in the Kaggle COVID-19 Radiography Database layout
(`COVID/images/*.png`, `Normal/images/*.png`), so that CXR Review runs without any setup. `manifest.csv` has one
row per image: file, label, source, source_repo, original_path, patient_id, view, license, sha256 (the columns of
the cxr-sample it was drawn from). Rebuild it with `python demo/build.py`.

| source | label | images (one per patient) |
|---|---|---|
{table}

## Deliberately confounded

Every COVID image comes from one hospital and every Normal image from two other collections, one of them of
children. Source alone predicts the label perfectly, so a model trained here can score highly by learning the
hospital, scanner or age instead of the disease. This is on purpose: the demo teaches the shortcut. A score on a
random split of data like this says nothing about disease detection; leave-one-source-out (train without a source,
test on it) is the honest test. The Hannover collection has only {hannover_patients} patients, so with one image per
patient the COVID class has {n_covid} images.

## How the images were chosen and made

- Taken only from the `hannover` (COVID), `nih-cxr14` (Normal) and `kermany-pediatric` (Normal) rows of the
  cxr-sample manifest, checking each row's `license` value. No other source of the sample is redistributable.
- Per patient, the image with the smallest sha256; patients in sha256 order; {wanted}.
- The cxr-sample made every image by decoding the source file, converting it to 8-bit grey and resizing it directly
  to 299x299 (cv2.INTER_AREA, aspect ratio not kept). The demo copies those PNGs unchanged (same sha256) and only
  renames them `<Label>-<n>.png`. Total size {megabytes:.1f} MB.

## Credits and licences

- **Hannover Medical School COVID-19 images** (`hannover`, {n_hannover} images): Hannover Medical School (MHH),
  Institute for Diagnostic and Interventional Radiology. Winther H. B., Laser H., Gerbel S., et al. (2020).
  *COVID-19 Image Repository.* figshare. https://doi.org/10.6084/m9.figshare.12275009 (repository
  `ml-workgroup/covid-19-image-repository`). Licensed under CC BY 3.0
  (https://creativecommons.org/licenses/by/3.0/); the README asks users to credit the authors. Changes: converted
  to 8-bit grey and resized to 299x299.
- **NIH ChestX-ray14** (`nih-cxr14`, {n_nih} images, all "No Finding", adults): courtesy of the NIH Clinical Center
  (https://nihcc.app.box.com/v/ChestXray-NIHCC), released for unrestricted use; users are asked to cite
  Wang X., Peng Y., Lu L., Lu Z., Bagheri M., Summers R. M. *ChestX-ray8: Hospital-scale Chest X-ray Database and
  Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases.* IEEE CVPR 2017,
  pp. 2097-2106, and to credit the NIH Clinical Center. Taken via the "No_findings" folder of `muhammedtalo/COVID-19`.
  Changes: resized to 299x299.
- **Kermany et al. paediatric chest X-rays** (`kermany-pediatric`, {n_kermany} images, children): Kermany D.,
  Zhang K., Goldbaum M. (2018). *Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for
  Classification.* Mendeley Data, V2. https://doi.org/10.17632/rscbjbr9sj.2, licensed under CC BY 4.0
  (https://creativecommons.org/licenses/by/4.0/). See also Kermany D. S., Goldbaum M., Cai W., et al.
  *Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning.* Cell 172(5), 1122-1131, 2018.
  Taken via the original train/NORMAL files in `lecuong1502/BTL_Machine_Learning`. Changes: converted to 8-bit grey
  and resized to 299x299.

For research and teaching only; not for clinical use.
"""


def read_manifest(sample: Path) -> list[dict[str, str]]:
    """The rows of the sample's manifest."""
    with open(sample / "manifest.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def choose(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per patient of each allowed (source, label), smallest sha256 first, up to the wanted count."""
    chosen: list[dict[str, str]] = []
    for (source, label), (licence, wanted) in SELECTION.items():
        first: dict[str, dict[str, str]] = {}
        for row in rows:
            if (row["source"], row["label"]) != (source, label):
                continue
            if row["license"] != licence:
                raise SystemExit(f"{row['file']}: licence {row['license']!r} is not the expected {licence!r}")
            best = first.get(row["patient_id"])
            if best is None or row["sha256"] < best["sha256"]:
                first[row["patient_id"]] = row
        chosen.extend(sorted(first.values(), key=lambda r: r["sha256"])[:wanted])
    return chosen


def build(sample: Path, out: Path) -> list[dict[str, str]]:
    """Copy the chosen images into ``out`` as ``<Label>/images/<Label>-<n>.png`` and write the manifest and SOURCES.md."""
    rows = read_manifest(sample)
    chosen = choose(rows)
    numbers: Counter[str] = Counter()
    written = []
    for label in CLASSES:
        shutil.rmtree(out / label, ignore_errors=True)
        (out / label / "images").mkdir(parents=True)
    for row in sorted(chosen, key=lambda r: (CLASSES.index(r["label"]), r["sha256"])):
        numbers[row["label"]] += 1
        name = f"{row['label']}/images/{row['label']}-{numbers[row['label']]}.png"
        shutil.copyfile(sample / row["file"], out / name)
        written.append({**row, "file": name})
    with open(out / "manifest.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(written)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.suffix in (".png", ".csv"))
    if size > MAX_BYTES:
        raise SystemExit(f"the demo would take {size / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:.1f} MB budget")
    counts = Counter((r["source"], r["label"]) for r in written)
    hannover = {r["patient_id"] for r in rows if r["source"] == "hannover"}
    (out / "SOURCES.md").write_text(SOURCES_TEMPLATE.format(
        total=len(written), table="\n".join(f"| {s} | {lbl} | {counts[s, lbl]} |" for s, lbl in SELECTION),
        hannover_patients=len(hannover), n_covid=numbers["COVID"], n_hannover=counts["hannover", "COVID"],
        n_nih=counts["nih-cxr14", "Normal"], n_kermany=counts["kermany-pediatric", "Normal"], megabytes=size / 1e6,
        wanted=", ".join(f"up to {n} {s}" for (s, _), (_, n) in SELECTION.items())), encoding="utf-8")
    return written


def main() -> None:
    """Parse the options and rebuild the demo."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="the cxr-sample folder")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the demo (default: this folder)")
    args = parser.parse_args()
    written = build(args.sample, args.out)
    print(f"wrote {len(written)} images to {args.out}: " + ", ".join(
        f"{k} {v}" for k, v in sorted(Counter(r["source"] for r in written).items())))


if __name__ == "__main__":
    main()
