"""pqcodec-train: stage 1 `ae` (autoencoder + quantizer), stage 2 `prior` (MIM transformer on the
stage-1 tokens; ends by calibrating the integer prior the coder runs, which `quantize` also does
alone), `perceptual` (a second decoder for the same files, fine-tuned with an adversarial loss),
`conditional` (a head predicting each sub-quantizer from the lower ones, on the frozen prior).
All log to OUT/log.jsonl, and all but `conditional` (minutes) resume from OUT's checkpoint; `ae`
and `prior` also run under `torchrun --nproc_per_node=N` as well as plain python. docs/training.md has the recipe."""
import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    from ..config import PADDINGS
    p = argparse.ArgumentParser(prog="pqcodec-train", description=__doc__)
    sub = p.add_subparsers(dest="stage", required=True)

    def common(sp):
        sp.add_argument("--data", required=True, help="folder of training images (searched recursively)")
        sp.add_argument("--out", required=True, help="run folder: checkpoint, log.jsonl, model.safetensors")
        sp.add_argument("--steps", type=int, required=True, help="total optimiser steps (a resumed run continues to it)")
        sp.add_argument("--warmup", type=int, default=200)
        sp.add_argument("--bf16", action="store_true", help="bfloat16 autocast (halves CPU step time on AVX-512 BF16)")
        sp.add_argument("--minutes", type=float,
                        help="wall-clock budget: measure the step rate, end the run (and its cosine decay) "
                             "at the last step that fits, and stop at the deadline whatever happens")
        sp.add_argument("--log-every", type=int, default=25)
        sp.add_argument("--save-every", type=int, default=250)

    ae = sub.add_parser("ae", help="stage 1: autoencoder and product quantizer")
    common(ae)
    ae.add_argument("--init", help="start from this weights file instead of from scratch")
    ae.add_argument("--batch", type=int, default=16, help="per process")
    ae.add_argument("--crop", type=int, default=128)
    ae.add_argument("--lr", type=float, default=7e-4)
    ae.add_argument("--commit-weight", type=float, default=0.25)
    ae.add_argument("--restart-every", type=int, default=100)
    ae.add_argument("--dead-threshold", type=float, default=0.5,
                    help="codes used less than this many times per batch (EMA) are restarted")
    ae.add_argument("--channels", type=int, default=128)
    ae.add_argument("--subvectors", type=int,
                    help="M (default 4); with --init, a larger M grows the model (PQCodecModel.grown)")
    ae.add_argument("--levels", help="sub-quantizers in use per quality level, e.g. 1,2,4,8,12 (default: 1..M)")
    ae.add_argument("--codebook-size", type=int, default=256)
    ae.add_argument("--subvector-dim", type=int, default=16)
    ae.add_argument("--window", type=int, default=16, help="prior window in tokens (fixed here, trained in stage 2)")
    ae.add_argument("--prior-dim", type=int, default=256)
    ae.add_argument("--prior-layers", type=int, default=4)
    ae.add_argument("--prior-heads", type=int, default=4)
    ae.add_argument("--padding", choices=PADDINGS,
                    help="how the conv transforms pad at the border (default: --init's, or zeros); with "
                         "--init, replicate switches a zero-padded model (docs/quality.md, section 3)")
    ae.add_argument("--synthetic", type=float, default=0.0, metavar="FRACTION",
                    help="fraction of crops replaced by flat colours, colour ramps and photos with a flat "
                         "rectangle (data.CropSampler; docs/quality.md, section 3)")

    pr = sub.add_parser("prior", help="stage 2: MIM prior on the tokens of a trained autoencoder")
    common(pr)
    pr.add_argument("--init", required=True, help="weights file whose autoencoder makes the tokens")
    pr.add_argument("--warm", nargs="?", const=True, default=False, metavar="FROM",
                    help="start from the prior in --init (e.g. a grown model's), or in the weights file FROM "
                         "(e.g. the model --init's autoencoder was fine-tuned from), instead of a fresh one")
    pr.add_argument("--batch", type=int, default=32, help="windows per step, per process")
    pr.add_argument("--lr", type=float, default=5e-4)
    pr.add_argument("--weight-decay", type=float, default=0.01)
    pr.add_argument("--edge-windows", type=float, default=0.2,
                    help="share of training windows cut as at an image's bottom/right edge (coding's partial windows)")
    pe = sub.add_parser("perceptual", help="the perceptual decoder: fine-tune the decoder alone with an adversarial "
                        "loss (encoder, quantizer, prior frozen: every file decodes with both decoders)")
    common(pe)
    pe.add_argument("--init", required=True, help="main weights file whose decoder is fine-tuned (the decoder "
                    "file written pairs with this file only)")
    pe.add_argument("--batch", type=int, default=8)
    pe.add_argument("--crop", type=int, default=128)
    pe.add_argument("--lr", type=float, default=1e-4, help="decoder's peak learning rate (Adam, betas 0.5, 0.9)")
    pe.add_argument("--d-lr", type=float, default=4e-4, help="discriminator's peak learning rate")
    pe.add_argument("--d-steps", type=int, default=2, help="discriminator updates per decoder update (same batch)")
    pe.add_argument("--adv-warmup", type=int, default=300,
                    help="distortion-only decoder steps first (the discriminator trains from step 0)")
    pe.add_argument("--adv-weight", type=float, default=0.8,
                    help="adversarial pull relative to the distortion pull (times VQGAN's adaptive weight)")
    pe.add_argument("--fm-weight", type=float, default=1.0, help="feature matching, inside the adversarial term")
    pe.add_argument("--mse-weight", type=float, default=1.0)
    pe.add_argument("--msssim-weight", type=float, default=0.0, help="(1 - MS-SSIM) term (7-px window, fits 128 crops)")
    pe.add_argument("--lpips-alexnet", metavar="FILE",
                    help="adds LPIPS-Alex to the distortion term, with torchvision's AlexNet weights from this local "
                    "file (alexnet-owt-7be5be79.pth; needs the lpips package)")
    pe.add_argument("--lpips-weight", type=float, default=1.0)
    pe.add_argument("--cond-channels", type=int, default=12,
                    help="channels of the quantized latent the discriminator sees (0: unconditional)")
    pe.add_argument("--disc-width", type=int, default=32)
    pe.add_argument("--scales", type=int, default=2, help="discriminator scales (1x, 1/2x, ...)")
    co = sub.add_parser("conditional", help="the conditional head on a trained model's frozen prior (each "
                        "sub-quantizer given the lower ones at the same position), calibrated; minutes on a CPU")
    co.add_argument("--init", required=True, help="weights file with a calibrated prior (or a head to recalibrate)")
    co.add_argument("--data", required=True, help="folder of training images")
    co.add_argument("--out", required=True, help="run folder: log.jsonl, model.safetensors (the head; --init its base)")
    co.add_argument("--windows", type=int, default=16384, help="training windows (256 positions each; 2 GB of "
                    "features in memory at the default)")
    co.add_argument("--epochs", type=float, default=2.5, help="passes over their positions (0: calibrate only)")
    co.add_argument("--batch", type=int, default=2048, help="positions per step")
    co.add_argument("--lr", type=float, default=1e-3)
    co.add_argument("--weight-decay", type=float, default=0.0)
    co.add_argument("--embed", type=int, default=128, help="embedding width E")
    co.add_argument("--hidden", type=int, default=256, help="hidden width per sub-quantizer")
    co.add_argument("--held-out", type=int, default=512, help="fresh windows the head is measured on")
    co.add_argument("--calibration-windows", type=int, default=512)
    co.add_argument("--seed", type=int, default=0)
    qu = sub.add_parser("quantize", help="the integer prior the coder runs, calibrated from the float prior")
    qu.add_argument("--init", required=True, help="weights file with a trained prior")
    qu.add_argument("--data", required=True, help="folder of training images (calibration windows)")
    qu.add_argument("--out", required=True, help="weights file to write")
    qu.add_argument("--windows", type=int, default=1024, help="calibration windows")
    qu.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.stage == "ae":
            from .ae import train
        elif args.stage == "prior":
            from .prior import train
        elif args.stage == "perceptual":
            from .perceptual import train
        elif args.stage == "conditional":
            from .conditional import train
        else:
            from .quantize import train
        train(args)
    except KeyboardInterrupt:
        if args.stage == "conditional":  # its one file is written whole at the end
            sys.exit("interrupted: nothing written to --out (the conditional stage does not resume: rerun it)")
        sys.exit("interrupted: the last checkpoint in --out is kept; rerun the same command to resume")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"pqcodec-train: error: {e}")
    _leave_process_group()


def _leave_process_group():
    """Under torchrun, once the run's files are written: leave the process group and end the process
    without the interpreter's teardown. Gloo's worker threads can still hold work objects then, and
    destroying them during finalization aborts the process now and then ("terminate called without
    an active exception", SIGABRT, after the model was saved: 1 run in 12 of the two-process test;
    pytorch/pytorch#190489), which torchrun reports as a failed run. Nothing is left to do at that
    point but flush the output."""
    import torch.distributed as dist
    if not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
