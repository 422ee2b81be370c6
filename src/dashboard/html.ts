/**
 * HTML built from tagged templates that escape every interpolated value:
 * the only way pages put text on the screen, so a payload holding
 * `<script>` shows as text. `Html` values (other templates, `raw`) are
 * inserted as they are; arrays are joined; null, undefined and false vanish.
 */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

/** A value a template may interpolate. */
export type HtmlChild = Html | string | number | boolean | null | undefined | readonly HtmlChild[];

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text made safe for HTML content and quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

function render(child: HtmlChild): string {
  if (child === null || child === undefined || child === false || child === true) return '';
  if (child instanceof Html) return child.value;
  if (Array.isArray(child)) return child.map(render).join('');
  return escapeHtml(String(child));
}

/** The escaping template tag. */
export function html(strings: TemplateStringsArray, ...values: HtmlChild[]): Html {
  let out = strings[0] ?? '';
  values.forEach((value, i) => (out += render(value) + (strings[i + 1] ?? '')));
  return new Html(out);
}

/** Trusted markup, inserted unescaped (only for text pgq itself wrote). */
export function raw(markup: string): Html {
  return new Html(markup);
}
