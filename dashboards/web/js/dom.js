// Building DOM without markup strings.
//
// Lot codes, device names, alert messages and notes are typed by people or sent by
// devices, so they are untrusted: they must reach the page as text, never as HTML
// (a lot code "<script>alert(1)</script>" has to show up literally). Everything
// here creates elements and text nodes; there is deliberately no innerHTML,
// insertAdjacentHTML or setAttribute("style") anywhere in the dashboard (the
// latter is also refused by the server's CSP, style-src 'self').

/**
 * Create an element.
 *
 *   h("button", {class: "btn", testid: "lot-set", type: "submit", on: {click: f}}, "Definir")
 *
 * attrs: `class` (string or array, falsy entries skipped), `testid` (data-testid),
 * `data` (object of data-* values), `on` (event listeners), `hidden`, `disabled`
 * and other booleans, anything else goes through setAttribute. Children: strings
 * and numbers become text nodes, null/undefined/false are skipped, arrays are
 * flattened.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") {
        const names = Array.isArray(value) ? value.filter(Boolean) : String(value).split(/\s+/);
        for (const c of names) if (c) el.classList.add(c);
      } else if (name === "testid") {
        el.dataset.testid = value;
      } else if (name === "data") {
        for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) el.dataset[k] = v;
      } else if (name === "on") {
        for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
      } else if (name === "text") {
        el.textContent = value;
      } else if (name === "style") {
        throw new Error("inline style attributes are blocked by the CSP; use a class");
      } else if (value === true) {
        el.setAttribute(name, "");
      } else {
        el.setAttribute(name, String(value));
      }
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Set an element's text, skipping the write when unchanged (keeps screen readers and selections calm). */
export function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Toggle a set of mutually exclusive state classes, e.g. ["is-ok", "is-wet"]. */
export function setState(el, classes, active) {
  for (const c of classes) el.classList.toggle(c, c === active);
}

/**
 * Keep `parent`'s children in step with `items`, one child per key.
 *
 * Live updates arrive several times a second; rebuilding a table or a card on
 * each would lose what the user is typing in a form and make charts flicker.
 * Children are created once per key with `create(item)` (which returns the node)
 * and refreshed with `update(node, item)`; children whose key disappeared are
 * removed (with `remove(node)` called first, e.g. to destroy a chart), and the
 * order follows `items`.
 */
export function syncKeyed(parent, items, keyOf, create, update, remove) {
  const existing = new Map();
  for (const node of Array.from(parent.children)) {
    if (node.dataset.key !== undefined) existing.set(node.dataset.key, node);
  }
  let cursor = parent.firstElementChild;
  // Skip any non-keyed leading children (a heading, say): keyed children go after them.
  while (cursor && cursor.dataset.key === undefined) cursor = cursor.nextElementSibling;
  for (const item of items) {
    const key = String(keyOf(item));
    let node = existing.get(key);
    if (node) {
      existing.delete(key);
    } else {
      node = create(item);
      node.dataset.key = key;
    }
    update(node, item);
    if (node !== cursor) parent.insertBefore(node, cursor);
    else cursor = cursor.nextElementSibling;
  }
  for (const node of existing.values()) {
    if (remove) remove(node);
    node.remove();
  }
}

/** Characters outside [a-zA-Z0-9_-] become "_" (the rule for test ids built from alert subjects). */
export function safeId(value) {
  return String(value ?? "").replace(/[^a-zA-Z0-9_-]/g, "_");
}
