"""The project's exceptions share one base, ivr.errors.IvrError, so that handlers can tell a
failure the code expects from a bug."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from ivr.errors import IvrError
from tests.test_layers import PACKAGES, ROOT


def _modules():
    for package in PACKAGES:
        yield importlib.import_module(package)
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if ".migrations" not in info.name and not info.name.endswith("__main__"):
                yield importlib.import_module(info.name)


def test_every_exception_class_derives_from_ivr_error():
    found = {f"{cls.__module__}.{cls.__qualname__}": cls for module in _modules()
             for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, BaseException) and cls.__module__ == module.__name__}
    assert len(found) >= 19  # every module's own, not only the ones this test was written with
    assert [name for name, cls in found.items() if not issubclass(cls, IvrError)] == []


def test_one_model_unavailable_for_vosk_models_and_the_intent_model():
    from speech import intents, models
    from speech.errors import ModelUnavailable

    assert models.ModelUnavailable is intents.ModelUnavailable is ModelUnavailable
    assert not hasattr(models, "ModelNotAvailable")
    assert issubclass(ModelUnavailable, RuntimeError)  # still caught where RuntimeError was
