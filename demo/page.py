"""The demo page (Gradio): draw any species the model knows in any style and type, fuse two, morph one
into another, and watch the reverse process x_T -> x_0 as it runs.

    from demo.page import build_page, launch
    launch(build_page(load_pipeline("checkpoints/release")), host="127.0.0.1", port=7860)

One model, loaded once, behind a queue that runs one request at a time (a CPU is busy with one);
each request streams the decoded x_t while it samples, with a progress bar, then shows the samples
and offers them as a zip (0000.png, ... and labels.csv, as `python -m diffusion.sample` writes
them). Controls for labels the model was not trained with are hidden. A bad request (an unknown
species typed by hand, a seed out of range) is one line on the page; the server keeps serving.
The page loads nothing from elsewhere (Gradio's own fonts and scripts) and sends no analytics.
What it does is demo/actions.py; this module only lays it out.
"""
from __future__ import annotations

import os

# Before gradio is imported: no analytics, no version check, no calls to the Hugging Face hub.
OFFLINE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "DO_NOT_TRACK": "1"}
for _key, _value in OFFLINE.items():
    os.environ.setdefault(_key, _value)

import tempfile  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from demo.actions import (ANY_TYPE, MAX_MORPH, MAX_N, NO_FUSION, RANDOM, Request, captions,  # noqa: E402
                          live, morph_labels, request_labels, species_choices, style_choices, type_choices,
                          write_zip)
from diffusion.pipeline import MAX_GUIDANCE, Pipeline, to_pil  # noqa: E402
from plumbing.cli import UserError  # noqa: E402

# 64x64 samples shown large stay sharp pixels instead of a blur.
CSS = ".pixels img, .pixels canvas { image-rendering: pixelated; }"


def build_page(pipe: Pipeline, threads: int | None = None, out_dir: Path | None = None) -> gr.Blocks:
    """The page for one loaded model, sampling with `threads` PyTorch threads (None: as set); zips go to
    `out_dir` (default: a temporary folder)."""
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="pokediffusion-demo-"))
    cond = pipe.conditional
    names = species_choices(pipe)

    def run(req: Request, labels, n: int, noise, progress, what: str):
        """The streamed outputs of one request: (x_t frame, gallery, status, zip) at each frame, then the samples."""
        frame = None
        for kind, *rest in live(pipe, n, req.seed, labels, float(req.guidance), req.sampler, req.steps, noise,
                                threads=threads):
            if kind == "step":
                progress(tuple(rest), desc="denoising", unit="steps")
            elif kind == "frame":
                frame = rest[1]
                yield frame, gr.skip(), f"{what}: x_t at t = {rest[0]}", gr.skip()
            else:
                images, seconds = rest
                zipped = write_zip(out_dir / uuid.uuid4().hex, pipe, images, labels, float(req.guidance), req.seed)
                steps = pipe.schedule.T if req.sampler == "ddpm" else req.steps
                status = (f"{n} samples, {what} ({req.sampler.upper()} {steps} steps, seed {req.seed}, guidance "
                          f"{float(req.guidance):g}) in {seconds:.1f} s")
                yield frame, list(zip(to_pil(images), captions(pipe, labels, n))), status, str(zipped)

    def draw(species, fuse_with, fuse_weight, style, type_, guidance, seed, n, sampler, steps,
             progress=gr.Progress()):
        try:
            req = Request(species, fuse_with, fuse_weight, style, type_, guidance, seed, n, sampler, steps).checked(pipe)
            labels, rows, warned = request_labels(pipe, req)
            for line in warned:
                gr.Warning(line)
            yield from run(req, labels, len(labels) if labels is not None else req.n, None, progress,
                           "; ".join(rows) or "unconditional")
        except UserError as err:
            raise gr.Error(str(err), print_exception=False) from None

    def morph(species, fuse_with, style, type_, guidance, seed, steps, k, progress=gr.Progress()):
        try:
            k = int(k)
            req = Request(species, fuse_with, 0.0, style, type_, guidance, seed, 1, "ddim", steps).checked(pipe, n=k)
            labels, x_T, warned = morph_labels(pipe, req, k)
            for line in warned:
                gr.Warning(line)
            yield from run(req, labels, k, x_T, progress, f"{req.species} -> {req.fuse_with} in {k} steps")
        except UserError as err:
            raise gr.Error(str(err), print_exception=False) from None

    with gr.Blocks(title="pokediffusion", delete_cache=(3600, 3600)) as page:
        known = ", ".join(kind for kind, on in cond.items() if on) or "no labels (unconditional)"
        source = Path(pipe.source).resolve()
        shown = source.relative_to(Path.cwd()) if source.is_relative_to(Path.cwd()) else source  # no home folders
        gr.Markdown(f"# pokediffusion\nThe model `{shown}` draws 64x64 Pokemon; it was trained with "
                    f"{known}. One request runs at a time.")
        with gr.Row():
            with gr.Column(scale=1):
                species = gr.Dropdown(names or [RANDOM], value=RANDOM, label="Species", filterable=True,
                                      allow_custom_value=True, visible=cond["species"], elem_id="species",
                                      info=f"{len(names) - 1} species: type to search, or a Pokedex number")
                with gr.Group(visible=cond["species"]):
                    fuse_with = gr.Dropdown([NO_FUSION] + names[1:], value=NO_FUSION, label="Fuse with",
                                            filterable=True, allow_custom_value=True,
                                            info="a second species: their fusion, and the morph's end")
                    fuse_weight = gr.Slider(0, 1, value=0.5, step=0.05, label="Fusion weight (0: first, 1: second)")
                style = gr.Dropdown(style_choices(pipe) or ["artwork"], value="artwork", label="Style",
                                    visible=cond["style"])
                type_ = gr.Dropdown(type_choices(pipe) or [ANY_TYPE], value=ANY_TYPE, label="Type",
                                    visible=cond["type"])
                guidance = gr.Slider(0, MAX_GUIDANCE, value=1.0, step=0.5, label="Guidance",
                                     info="0: unconditional, 1: conditional, above 1: stronger",
                                     visible=any(cond.values()))
                seed = gr.Number(0, label="Seed", precision=0)
                n = gr.Slider(1, MAX_N, value=8, step=1, label="Samples", elem_id="n")
                sampler = gr.Radio(["ddim", "ddpm"], value="ddim", label="Sampler",
                                   info=f"DDPM takes all {pipe.schedule.T} steps")
                steps = gr.Slider(1, pipe.schedule.T, value=25, step=1, label="DDIM steps", elem_id="steps")
                draw_button = gr.Button("Draw", variant="primary", elem_id="draw")
                with gr.Group(visible=cond["species"]):
                    k = gr.Slider(2, MAX_MORPH, value=6, step=1, label="Morph steps",
                                  info="the same seed from the species to the fused one (DDIM)")
                    morph_button = gr.Button("Morph")
            with gr.Column(scale=2):
                frame = gr.Image(label="Reverse process x_T -> x_0 (decoded x_t)", type="numpy", format="png",
                                 interactive=False, height=320, elem_classes="pixels", elem_id="reverse")
                status = gr.Textbox(label="Status", interactive=False, lines=1, max_lines=2, elem_id="status")
                gallery = gr.Gallery(label="Samples", columns=8, height="auto", object_fit="contain", format="png",
                                     elem_classes="pixels", elem_id="samples")
                download = gr.File(label="Download: PNGs and labels.csv (zip)", interactive=False)
        outputs = [frame, gallery, status, download]
        draw_button.click(draw, [species, fuse_with, fuse_weight, style, type_, guidance, seed, n, sampler, steps],
                          outputs, api_name="draw", concurrency_limit=1, concurrency_id="model")
        morph_button.click(morph, [species, fuse_with, style, type_, guidance, seed, steps, k], outputs,
                           api_name="morph", concurrency_limit=1, concurrency_id="model")
    return page


def launch(page: gr.Blocks, host: str | None = None, port: int | None = None, block: bool = True):
    """Serve the page: one request at a time (others wait in the queue), no share link, on `host`
    (None: Gradio's default, 127.0.0.1 or $GRADIO_SERVER_NAME as Hugging Face Spaces sets it)."""
    page.queue(default_concurrency_limit=1, max_size=32)
    return page.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
                       prevent_thread_lock=not block, css=CSS, ssr_mode=False)
