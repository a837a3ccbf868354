// Building DOM without innerHTML: text is always set as text, never parsed as markup, so
// data from the API (company names, usernames) cannot inject anything.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') {
      Object.assign(element.dataset, value);
    } else {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: h('button', {type: 'button', onclick: f}, 'Text'). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Removes every child of an element. */
export function clear(element) {
  element.replaceChildren();
}

let nextId = 0;
/** A page-unique id for label/for and aria-describedby pairs. */
export function uid(prefix) {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A labelled input: returns {field, input}. The label text is the input's accessible name. */
export function labelled(labelText, inputAttrs, hint) {
  const id = uid('f');
  const hintId = hint ? `${id}-hint` : undefined;
  const input = h('input', { id, 'aria-describedby': hintId, ...inputAttrs });
  const field = h('div', { class: 'field' },
    h('label', { for: id }, labelText),
    input,
    hint ? h('p', { id: hintId, class: 'hint' }, hint) : null);
  return { field, input };
}

/**
 * A message area: role="status" for news, role="alert" for errors. Both are always in the
 * DOM (screen readers announce changes to live regions that already exist) and hidden while
 * empty.
 */
export function messages() {
  const status = h('p', { role: 'status', class: 'status', hidden: true });
  const alert = h('p', { role: 'alert', class: 'alert', hidden: true });
  const set = (element, text) => {
    element.textContent = text || '';
    element.hidden = !text;
  };
  return {
    elements: [status, alert],
    status(text) { set(alert, ''); set(status, text); },
    error(text) { set(status, ''); set(alert, text); },
    clear() { set(status, ''); set(alert, ''); },
  };
}
