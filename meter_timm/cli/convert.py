"""``meter-timm convert FILE --out DIR``: weights in timm's hub layout (``model.safetensors`` +
``config.json``), loadable with ``timm.create_model("local-dir:DIR", pretrained=True)``, from the
Hugging Face Hub once uploaded (``hf-hub:ORG/NAME``), or anywhere meter-timm takes a weights file.

    meter-timm convert build_model_best_nyu_xxs --model meter_xxs.nyu --out hub/meter_xxs.nyu
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE",
        help="weights: the authors' file, a state dict, an mmengine checkpoint or .safetensors",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (created if needed)"
    )
    parser.add_argument(
        "--model",
        default="meter_xxs.nyu",
        help="timm model name with pretrained tag: sets the architecture, input size "
        "and depth unit of the config (default: meter_xxs.nyu)",
    )


def run(args: argparse.Namespace) -> int:
    from meter_timm.deploy import build_model, save_hub_folder

    model = build_model(args.model, args.file)
    paths = save_hub_folder(model, args.out)
    print(
        f"wrote {paths['weights']} and {paths['config']} ({args.model}, depth unit "
        f"{model.pretrained_cfg.get('depth_unit')}); load with "
        f'timm.create_model("local-dir:{args.out}", pretrained=True)'
    )
    return 0
