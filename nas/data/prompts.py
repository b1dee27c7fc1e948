"""Zero-shot prompt templates, as open_clip formats a class name into them (`template.format(name)`): the
default, and the check a study's `data.zeroshot_templates` and an eval set's own templates pass. Kept apart from
the eval sets (`nas.data.evalsets`, which needs torch) so that a study loads without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from nas.errors import ConfigError

DEFAULT_TEMPLATES = ("a photo of a {}.",)


def check_templates(templates: Sequence[str], field: str = "zeroshot_templates") -> list[str]:
    """Prompt templates as open_clip formats them: a non-empty list of strings that each hold one `{}`."""
    if isinstance(templates, str) or not templates or not all(isinstance(t, str) for t in templates):
        raise ConfigError(f"a non-empty list of prompt templates, got {templates!r}", field=field)
    for template in templates:
        if template.count("{}") != 1:
            raise ConfigError(f"{template!r} must hold exactly one {{}} (where the class name goes)", field=field)
    return list(templates)
