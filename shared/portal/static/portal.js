"use strict";
// Progressive enhancement only: every page works without this file.
// - <button class="copy" data-copy="ID" hidden> copies the text of element ID to the clipboard.
// - <form data-confirm="question"> asks before submitting (deleting a secret).

function announce(text) {
  const status = document.getElementById("copy-status");
  if (status) {
    status.textContent = text;
  }
}

function selectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

function copied(button, label) {
  const original = button.dataset.label || button.textContent;
  button.dataset.label = original;
  button.textContent = label;
  announce(label);
  window.setTimeout(() => { button.textContent = original; }, 2500);
}

async function copyFrom(event) {
  const button = event.currentTarget;
  const source = document.getElementById(button.dataset.copy);
  if (!source) {
    return;
  }
  try {
    await navigator.clipboard.writeText(source.textContent);
    copied(button, "Copied");
  } catch {
    selectText(source);
    copied(button, "Selected: press Ctrl+C to copy");
  }
}

function confirmSubmit(event) {
  if (!window.confirm(event.currentTarget.dataset.confirm)) {
    event.preventDefault();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", copyFrom);
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", confirmSubmit);
  }
});
