/* Alerts page: Enter in a threshold's number box saves it, as leaving the box (Tab) does.
 * Dash's Slider commits a typed value to its `value` prop only on blur; with updatemode "mouseup",
 * Enter moved the handle but sent nothing, so the page showed a value the training did not use. */
document.addEventListener("keydown", function (event) {
  var box = event.target;
  if (event.key !== "Enter" || !box || box.tagName !== "INPUT") { return; }
  if (!box.closest || !box.closest(".threshold__slider, .threshold")) { return; }
  box.blur();
}, true);
