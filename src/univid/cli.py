"""The command line: univid prepare, train, finetune, distill, generate, eval, demo, bench, info,
export.

It only parses and calls; the options themselves are in :mod:`univid.cli_options`.

User errors (:class:`univid.UnividError`) print one line and exit with code 2; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from univid import limits
from univid.cli_options import (
    DEVICES,
    DTYPES,
    Parser,
    add_bench_options,
    add_choice,
    add_eval_options,
    add_given_options,
    add_info_options,
    add_lora_options,
    add_prepare_options,
    add_sampling_options,
    add_speed_options,
    add_stream_options,
    number,
)
from univid.config.sections import BUILTIN_AUTOENCODERS, LONG_MODE
from univid.errors import InputError, UnividError


def _train(args: argparse.Namespace) -> None:
    from univid.train import start_or_resume

    start_or_resume(args.config, args.overrides, args.out, args.resume)


def _finetune(args: argparse.Namespace) -> None:
    from univid.train import finetune

    finetune(args.base, args.overrides, args.out)


def _distill(args: argparse.Namespace) -> None:
    from univid.train import distill

    distill(args.teacher, args.overrides, args.out)


def _local_spec(spec: str, builtin: tuple[str, ...]) -> str:
    """A folder given on the command line, made absolute (the cache records it); or a name in
    ``builtin``."""
    return spec if spec in builtin else str(Path(spec).resolve())


def _prepare(args: argparse.Namespace) -> int:
    from univid.data.buckets import bucket_name, parse_buckets
    from univid.data.cache import (
        PrepareSettings,
        check,
        describe_videos,
        prepare,
        print_report,
    )
    from univid.device import pick_device

    buckets = parse_buckets(args.buckets or f"{args.frames}x{args.height}x{args.width}")
    settings = PrepareSettings(
        autoencoder=_local_spec(args.autoencoder, BUILTIN_AUTOENCODERS),
        text_encoder=_local_spec(args.text_encoder, ("minilm",)),
        max_length=args.max_length,
        padding=args.padding,
        buckets=tuple(buckets),
        fps=args.fps,
        stride=args.stride,
        window_stride=args.window_stride,
        resize=args.resize,
        max_source_pixels=args.max_source_pixels,
        dtype=args.dtype,
        shard_size=args.shard_size,
        encode_batch=args.batch_size,
        max_bad_fraction=args.max_bad_fraction,
    )
    if not Path(args.src).exists():
        raise InputError(f"source {args.src} does not exist")
    if args.check:
        total, counts, bad, videos = check(args.src, settings)
        for key, reason in bad:
            print(f"{key}: {reason}")
        for line in describe_videos(videos):
            print(line)
        per_bucket = ", ".join(f"{bucket_name(b)}: {n}" for b, n in sorted(counts.items()))
        print(f"{total} items: {total - len(bad)} usable ({per_bucket or 'none'}), {len(bad)} bad")
        return 1 if bad else 0
    if args.out is None:
        raise InputError("prepare needs --out FOLDER (or --check)")
    report = prepare(args.src, args.out, settings, device=pick_device(args.device))
    print_report(report)
    print(report.cache)
    return 0


def _generate(args: argparse.Namespace) -> int | None:
    from univid.device import precision_note
    from univid.given import read_given
    from univid.pipeline import check_prompt, default_model
    from univid.video import check_output_path, save_video

    prompt = check_prompt(args.prompt)
    out = check_output_path(args.out)
    if args.frames is not None or args.prompt_at:
        return _generate_stream(args, prompt, out)
    if args.history_guidance is not None:
        raise InputError("--history-guidance needs --frames (streamed generation)")
    if args.model is None:
        asked = (args.guidance, args.solver, args.shift, args.step_cache, args.lora)
        args.model, note = default_model(args.steps, any(a is not None for a in asked))
        if note:
            print(f"univid: {note}", file=sys.stderr)
    pipe = _pipeline(args)
    d = pipe.config.data
    images = [(0, args.image)] * bool(args.image) + [(-1, args.last_image)] * bool(args.last_image)
    given = read_given(
        d.frames, d.height, d.width, d.fps, images + args.frame, args.video, args.keep
    )
    videos = pipe(
        [prompt],
        num_steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        num_videos=args.num,
        progress=True,
        **_sampling(args),
        **given,
    )
    print(f"univid: {precision_note(pipe.precision, pipe.device)}", file=sys.stderr)
    paths = [out] if args.num == 1 else [out.with_stem(f"{out.stem}-{k}") for k in range(args.num)]
    for video, path in zip(videos, paths):
        save_video(video, path, fps=pipe.config.data.fps, scale=args.scale)
        print(path)


def _generate_stream(args: argparse.Namespace, prompt: str, out: Path) -> int:
    """`generate --frames N`: a streaming model writes each chunk into ``out`` as it is made;
    Ctrl-C or SIGTERM leave a playable file of what was made."""
    from univid.build import STREAMING_MODEL
    from univid.pipeline import check_prompt
    from univid.stream_out import StreamStopped, terminate_as_interrupt, write_stream

    if args.frames is None:
        raise InputError("--prompt-at needs --frames (a streamed video)")
    refused = {
        "--num": args.num != 1,
        "--step-cache": args.step_cache is not None,
        "--image/--last-image/--frame/--video": bool(
            args.image or args.last_image or args.frame or args.video
        ),
    }
    for option, used in refused.items():
        if used:
            raise InputError(f"{option} does not combine with --frames (streamed generation)")
    if args.model is None:
        args.model = STREAMING_MODEL
    pipe = _pipeline(args)
    prompt_at = {}
    for frame, text in args.prompt_at:
        if not frame.isdigit():
            raise InputError(f"--prompt-at FRAME must be a frame index >= 0, got {frame!r}")
        prompt_at[int(frame)] = check_prompt(text)
    frames = pipe.stream(
        prompt,
        frames=args.frames,
        seed=args.seed,
        num_steps=args.steps,
        guidance_scale=args.guidance,
        prompt_at=prompt_at,
        solver=args.solver,
        shift=args.shift,
        history_guidance=args.history_guidance,
    )
    fps = pipe.config.data.fps
    try:
        with terminate_as_interrupt():
            write_stream(frames, out, fps=fps, scale=args.scale, total=args.frames, progress=True)
    except StreamStopped as stop:
        print(f"univid: {stop}", file=sys.stderr)
        return 130
    print(out)
    return 0


def _eval(args: argparse.Namespace) -> None:
    from univid.build import DEFAULT_MODEL, STREAMING_MODEL
    from univid.eval.report import save_report
    from univid.eval.run import evaluate
    from univid.video import check_output_path

    if Path(args.out).suffix != ".json":
        raise InputError(f"eval output {args.out} must end in .json")
    grid = Path(args.grid) if args.grid else Path(args.out).with_suffix(".png")
    check_output_path(grid)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: folder {out.parent} does not exist")
    limits.SEED.check("--seed-offset + --seeds - 1", args.seed_offset + args.seeds - 1)
    if args.model is None:
        args.model = STREAMING_MODEL if args.mode == LONG_MODE else DEFAULT_MODEL
    if args.mode == LONG_MODE:
        return _eval_long(args, out, grid)
    if args.history_guidance is not None:
        raise InputError(f"--history-guidance needs --mode {LONG_MODE} (streamed videos)")
    report, videos = evaluate(
        _pipeline(args),
        model=str(args.model),
        seeds=args.seeds,
        seed_offset=args.seed_offset,
        steps=args.steps,
        guidance=args.guidance,
        batch_size=args.batch_size,
        mode=args.mode,
        prompt_set=args.prompts,
        **_sampling(args),
    )
    failures = save_report(report, videos, out, grid)
    summary = {
        "mode": report["mode"],
        "prompts": report["prompts"],
        **report["accuracy"],
        "wilson95": report["all_correct_wilson95"],
        "failures": report["failures"],
        "val_loss": report["validation"]["val_loss"],
        **report["settings"],
    }
    paths = {"report": str(out), "grid": str(grid), "failures_grid": failures and str(failures)}
    print(json.dumps({**summary, **paths}))


def _eval_long(args: argparse.Namespace, out: Path, grid: Path) -> None:
    from univid.eval.long import plot_drift
    from univid.eval.stream import evaluate_long
    from univid.video import save_video, tile

    report, failed = evaluate_long(
        _pipeline(args),
        model=str(args.model),
        seeds=args.seeds,
        seed_offset=args.seed_offset,
        frames=args.frames,
        steps=args.steps,
        guidance=args.guidance,
        solver=args.solver,
        shift=args.shift,
        history_guidance=args.history_guidance,
        batch_size=args.batch_size,
        prompt_set=args.prompts,
    )
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_drift(report, grid)
    failures = out.with_name(f"{out.stem}-failures.gif")
    failures.unlink(missing_ok=True)  # a stale one from an earlier run would mislead
    if len(failed):
        save_video(tile(failed), failures, fps=8, scale=4)
    keys = ("mode", "videos", "right", "right_wilson95", "failures", "reasons", "identity")
    summary = {**{k: report[k] for k in keys}, "seam": report["seam"], **report["settings"]}
    paths = {"report": str(out), "drift": str(grid), "failures_gif": len(failed) and str(failures)}
    print(json.dumps({**summary, **paths}))


def _demo(args: argparse.Namespace) -> None:
    from univid.demo import serve

    serve(args.model, args.lora, host=args.host, port=args.port, device=args.device)


def _pipeline(args: argparse.Namespace):
    """The pipeline of `generate` and `eval`, with the speed options of the command line."""
    from univid.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(
        args.model, device=args.device, compile=args.compile, quantization=args.quantize
    )
    pipe.attention, pipe.precision = args.attention, args.precision
    if args.lora:
        pipe.load_lora(args.lora, args.lora_scale)
    return pipe


def _sampling(args: argparse.Namespace) -> dict:
    return {"shift": args.shift, "solver": args.solver, "step_cache": args.step_cache}


def _bench(args: argparse.Namespace) -> int:
    from univid.bench import run_bench
    from univid.bench.settings import settings_from_options

    settings = settings_from_options(vars(args), command_line="univid " + " ".join(args.argv))
    return run_bench(settings)


def _info(args: argparse.Namespace) -> None:
    from univid.build import BUNDLED, resolve_model_dir
    from univid.config import PRESETS, resolve_config
    from univid.info import describe

    source = Path(args.model)
    if args.model in BUNDLED and args.model not in PRESETS:  # a bundled model without a preset
        source = resolve_model_dir(args.model)
    if source.is_dir():  # a model or run folder
        source = source / "config.json"
        if not source.is_file():
            raise InputError(f"model folder {source.parent} has no config.json")
    cfg = resolve_config(str(source) if source.is_file() else args.model, args.overrides)
    d = cfg.data
    frames, height, width = args.frames or d.frames, args.height or d.height, args.width or d.width
    for name, size, p in zip(
        ("frames", "height", "width"), (frames, height, width), cfg.model.patch
    ):
        if size % p:
            raise InputError(f"--{name} {size} is not a multiple of the patch size {p}")
    text_len = args.text_len or cfg.text.max_length
    info = describe(cfg, frames, height, width, text_len)
    if args.json:
        print(json.dumps(info))
        return
    gap = 100 * (info["forward_flops"] / info["closed_form_flops"] - 1)
    print(
        f"model       {info['backbone']}, width {info['width']}, depth {info['depth']}, "
        f"heads {info['heads']}, patch {'x'.join(map(str, info['patch']))}\n"
        f"input       {frames} frames of {height}x{width}, {text_len} text tokens "
        f"-> {info['tokens']} tokens\n"
        f"parameters  {info['params'] / 1e6:.2f} M "
        f"(adaLN modulation {info['params_modulation'] / 1e6:.2f} M)\n"
        f"forward     {info['forward_flops'] / 1e9:.2f} GFLOP per video "
        f"(closed form 2*params*N + 4*L*N^2*D: {info['closed_form_flops'] / 1e9:.2f}, "
        f"{gap:+.1f} %)\n"
        f"train step  {info['train_step_flops'] / 1e9:.2f} GFLOP per video (forward + backward)"
    )


def _export(args: argparse.Namespace) -> None:
    from univid.build import export_model_dir
    from univid.device import DTYPES

    merge = (args.lora, args.lora_scale) if args.merge_lora else None
    if args.lora and not args.merge_lora:
        raise InputError("--lora needs --merge-lora (export writes plain model folders)")
    print(export_model_dir(args.model, args.out, DTYPES[args.dtype], merge))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="univid", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (preset or config file + key=value overrides)")
    p.add_argument("config", nargs="?", help="preset name (shapes-tiny, tiny) or .json/.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--out", help="run folder (checkpoints, metrics.csv, samples/)")
    p.add_argument(
        "--resume",
        metavar="DIR|latest",
        help="continue the run in DIR from its newest complete checkpoint; 'latest' continues "
        "--out DIR if it has one and starts it from CONFIG_OR_PRESET otherwise",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "finetune",
        help="adapt a trained model: LoRA adapters (lora.rank=R, default 8) or all weights "
        "(lora.rank=0); resume with train --resume DIR",
    )
    p.add_argument("base", help="bundled model name or model folder to start from")
    p.add_argument("overrides", nargs="*", help="key=value overrides (data.*, train.*, lora.*)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, adapter, metrics.csv)")
    p.set_defaults(func=_finetune)

    p = sub.add_parser(
        "distill",
        help="train a few-step student of a model on its own sampling paths (1, 2 or 4 steps); "
        "run it again to continue",
    )
    p.add_argument("teacher", help="bundled model name or model folder to distil")
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides (distill.*, train.*, flow.*, data.*)"
    )
    p.add_argument("--out", required=True, help="run folder (teacher paths, checkpoints)")
    p.set_defaults(func=_distill)

    p = sub.add_parser(
        "prepare",
        help="encode a folder or table of videos into a training cache (latents + text states)",
    )
    add_prepare_options(p)
    p.set_defaults(func=_prepare)

    p = sub.add_parser("generate", help="generate a video from a prompt")
    p.add_argument("prompt")
    p.add_argument("--out", required=True, help="output: .gif, .mp4, .png (frame grid) or .npy")
    p.add_argument(
        "--model",
        help="bundled model name or model folder (default: shapes-tiny; with --steps 1, 2 or 4 "
        "and no other sampling setting, its few-step student shapes-tiny-fast; with --frames, "
        "the streaming model shapes-long)",
    )
    add_sampling_options(p)
    p.add_argument("--seed", type=number(limits.SEED), default=0)
    p.add_argument(
        "--num",
        type=number(limits.NUM_VIDEOS),
        default=1,
        help="videos to make (seeds seed..seed+num-1)",
    )
    p.add_argument(
        "--scale", type=number(limits.SCALE), default=1, help="nearest-neighbour upscaling factor"
    )
    add_given_options(p)
    add_stream_options(p)
    add_choice(p, "--device", DEVICES, default="auto")
    add_speed_options(p)
    p.set_defaults(func=_generate)

    p = sub.add_parser("eval", help="judge every colour x shape x direction prompt")
    add_eval_options(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "bench", help="time, memory and MFU of train and sampling steps (JSON lines)"
    )
    add_bench_options(p)
    p.set_defaults(func=_bench)

    p = sub.add_parser("info", help="parameters and FLOPs of a model (counted, and closed form)")
    add_info_options(p)
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "export", help="copy a run's EMA weights (or a LoRA run's adapter) into a plain folder"
    )
    p.add_argument("model", help="run folder or model folder (or a LoRA fine-tuning run)")
    p.add_argument(
        "--out", required=True, help="folder for config.json + model.safetensors (or adapter.*)"
    )
    add_choice(p, "--dtype", DTYPES, default="float32")
    p.add_argument(
        "--merge-lora",
        action="store_true",
        help="fold a LoRA adapter into the weights: MODEL's own (a fine-tuning run) or --lora's",
    )
    add_lora_options(p)
    p.set_defaults(func=_export)

    p = sub.add_parser("demo", help="serve a web page that generates videos (needs univid[demo])")
    p.add_argument("--model", default="shapes-tiny", help="bundled model name or model folder")
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="DIR",
        help="a LoRA adapter folder the page offers; repeatable",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=number(limits.PORT), default=7860, help="default: 7860")
    add_choice(p, "--device", DEVICES, default="auto")
    p.set_defaults(func=_demo)
    parser.commands = sub.choices  # type: ignore[attr-defined]  # name -> its parser
    return parser


# Libraries that log warnings on import that a user can do nothing about: torchao (pulled in by
# transformers and diffusers when installed) about its CUDA-only extensions, torch's pytree and
# diffusers about torchao's version.
QUIET_LOGGERS = (
    "torchao",
    "torch.utils._pytree",
    "diffusers.quantizers.torchao.torchao_quantizer",
)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as arguments; a usage error prints one line and raises SystemExit(2)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in bench reports
    # key=value overrides may also follow options (`train PRESET --out DIR key=value`).
    if args.command in ("train", "finetune", "distill", "info", "bench"):
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
        # argparse puts the first override into `config` when no preset is given before it.
        if getattr(args, "config", None) and "=" in args.config:
            args.overrides = [args.config, *args.overrides]
            args.config = None
    if extra:
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        args = parse(argv)
    except SystemExit as exc:  # a usage error (one line printed) or --help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code = args.func(args) or 0
    except UnividError as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())  # always one line
        print(f"univid: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("univid: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:  # torch's CheckpointException is a BaseException
        from univid.files import causes, storage_error

        if args.debug or isinstance(exc, (SystemExit, GeneratorExit)):
            raise
        if any(isinstance(e, KeyboardInterrupt) for e in causes(exc)):  # wrapped by a library
            print("univid: interrupted", file=sys.stderr)
            return 130
        error = storage_error(exc)  # a full disk, wherever it was met, is one line
        if error is None:
            # Any other error of the OS (a permission, a vanished file) is the user's to fix:
            # one line with the file it names; --debug shows where it was met.
            os_error = next((e for e in causes(exc) if isinstance(e, OSError) and e.errno), None)
            if os_error is None:
                raise
            where = f"{os_error.filename}: " if os_error.filename else ""
            reason = (os_error.strerror or str(os_error)).lower()
            error = InputError(f"{where}{reason} (--debug shows where)")
        print(f"univid: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
