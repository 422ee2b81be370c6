// Used only when pgq itself runs from its TypeScript sources (tests, development):
// a worker thread cannot load .ts on its own, so this loads thread-entry.ts through tsx.
import { tsImport } from 'tsx/esm/api';

const entry = await tsImport(new URL('./thread-entry.ts', import.meta.url).href, import.meta.url);
export default entry.default;
