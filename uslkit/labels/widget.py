"""Label the picks in Jupyter: one image at a time, one button per class, keyboard shortcuts, saved per answer.

The widget fills the export folder's ``manifest.csv`` (:func:`uslkit.labels.roundtrip.export_for_labelling`)
and writes the labels file ``out``, both atomically after every answer, so closing the notebook loses nothing
and a new widget on the same folder continues at the first unlabelled pick. ``out`` is what ``uslkit labels
import`` writes from the manifest: while some picks are unlabelled it holds the labelled ones only, and its
``params["labelling"]`` says how many of how many (``"labelled": 12, "of": 40``); it is trainable at any time.
"""

from __future__ import annotations

import io
from pathlib import Path

from . import Selection, load_selection, save_selection
from .roundtrip import export_for_labelling, import_labels, read_manifest, write_manifest

__all__ = ["LabellingWidget", "KEYS"]

#: keyboard shortcuts typed into the widget's key box: the first ten classes, back and skip
KEYS = {**{str((k + 1) % 10): k for k in range(10)}, "b": "back", "s": "skip"}


class LabellingWidget:
    """A person labels ``selection`` in a notebook.

    Args:
        selection: the labels file (path) or :class:`~uslkit.labels.Selection` to label.
        dataset: the dataset it was made on (images for the export).
        folder: export folder (created, or reused when it holds this selection's export).
        out: labels file rewritten after every answer (``None``: only the manifest is kept). An existing ``out``
            must hold picks of this selection; the widget then keeps it in step with its answers.
        class_names: classes to choose from (default: the selection's or the dataset's).
        size: displayed image size in pixels (small images are enlarged without smoothing).

    ``answer(k)`` (class index or name), ``back()``, ``skip()`` do what the buttons do, for scripts and tests;
    ``progress`` is the text shown (``"12 / 40 labelled"``); ``result(allow_partial=...)`` returns the
    :class:`Selection`. Display the widget by leaving it as a cell's last expression (or ``display(w.ui)``).
    """

    def __init__(self, selection, dataset, folder, *, out=None, class_names=None, size: int = 224):
        import ipywidgets as W

        self.selection = selection if isinstance(selection, Selection) else load_selection(selection, dataset=dataset)
        self.folder = export_for_labelling(self.selection, dataset, folder, class_names=class_names)
        self.manifest = self.folder / "manifest.csv"
        self.class_names = list(class_names or self.selection.class_names or dataset.class_names)
        self.rows = read_manifest(self.manifest)
        self.out = None if out is None else Path(out)
        if self.out is not None and self.out.exists():
            old = load_selection(self.out)
            sel = self.selection
            if (old.dataset, old.split, old.n) != (sel.dataset, sel.split, sel.n) or not set(old.indices) <= set(
                    sel.indices):
                raise FileExistsError(f"{self.out} holds another selection's labels; choose another out")
        self.size = int(size)
        self.position = next((j for j, r in enumerate(self.rows) if not r["label"]), len(self.rows) - 1)
        self._image = W.Image(format="png", layout=W.Layout(width=f"{self.size}px", height=f"{self.size}px"))
        self._status = W.HTML()
        self.buttons = [W.Button(description=(f"{(k + 1) % 10}: " if k < 10 else "") + name,
                                 layout=W.Layout(width="auto")) for k, name in enumerate(self.class_names)]
        for k, b in enumerate(self.buttons):
            b.on_click(lambda _b, k=k: self.answer(k))
        self._back = W.Button(description="back (b)", icon="arrow-left")
        self._skip = W.Button(description="skip (s)", icon="arrow-right")
        self._back.on_click(lambda _b: self.back())
        self._skip.on_click(lambda _b: self.skip())
        self.keys = W.Text(placeholder="click here, then type 1-9, 0, b, s", continuous_update=True,
                           layout=W.Layout(width="260px"))
        self.keys.observe(self._on_key, names="value")
        self.ui = W.VBox([self._status, self._image, W.HBox(self.buttons, layout=W.Layout(flex_flow="row wrap")),
                          W.HBox([self._back, self._skip, self.keys])])
        self._render()

    # ------------------------------------------------------------------ actions
    def answer(self, label) -> None:
        """Label the current pick with class ``label`` (index or name), save, and move to the next unlabelled."""
        k = self.class_names.index(label) if isinstance(label, str) else int(label)
        if not 0 <= k < len(self.class_names):
            raise ValueError(f"label {label!r} is not a class: 0 <= label < {len(self.class_names)}")
        self.rows[self.position]["label"] = self.class_names[k]
        self._save()
        after = [j for j in range(self.position + 1, len(self.rows)) if not self.rows[j]["label"]]
        before = [j for j in range(self.position) if not self.rows[j]["label"]]
        self.position = (after or before or [min(self.position + 1, len(self.rows) - 1)])[0]
        self._render()

    def back(self) -> None:
        """Show the previous pick (to check or change its label)."""
        self.position = max(0, self.position - 1)
        self._render()

    def skip(self) -> None:
        """Show the next pick without labelling this one."""
        self.position = min(len(self.rows) - 1, self.position + 1)
        self._render()

    # ------------------------------------------------------------------ state
    @property
    def labelled(self) -> int:
        """How many picks have a label."""
        return sum(bool(r["label"]) for r in self.rows)

    @property
    def progress(self) -> str:
        return f"{self.labelled} / {len(self.rows)} labelled"

    def result(self, *, allow_partial: bool = False) -> Selection:
        """The annotated selection from the manifest (:func:`~uslkit.labels.roundtrip.import_labels`)."""
        return import_labels(self.manifest, self.selection, class_names=self.class_names, allow_partial=allow_partial)

    def _save(self) -> None:
        write_manifest(self.manifest, self.rows)
        if self.out is not None and self.labelled:
            save_selection(self.result(allow_partial=True), self.out, overwrite=True)

    # ------------------------------------------------------------------ display
    def _on_key(self, change) -> None:
        text = change["new"]
        if not text:
            return
        self.keys.value = ""
        action = KEYS.get(text[-1].lower())
        if action == "back":
            self.back()
        elif action == "skip":
            self.skip()
        elif isinstance(action, int) and action < len(self.class_names):
            self.answer(action)

    def _render(self) -> None:
        from PIL import Image

        row = self.rows[self.position]
        img = Image.open(self.folder / row["file"])
        scale = max(1, self.size // max(img.size))
        if scale > 1:
            img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        self._image.value = buf.getvalue()
        current = f"labelled <b>{row['label']}</b>" if row["label"] else "not labelled"
        done = (" &mdash; all labelled" if self.labelled == len(self.rows) else "") + \
            (f"; saved to {self.out}" if self.out is not None and self.labelled else "")
        self._status.value = (f"pick {self.position + 1} of {len(self.rows)} (id {row['id']}, {current}); "
                              f"{self.progress}{done}")

    def _repr_mimebundle_(self, **kwargs):  # a cell ending in the widget shows its controls
        return self.ui._repr_mimebundle_(**kwargs)
