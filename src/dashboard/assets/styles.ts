/** The console's stylesheet, served as `assets/console.css`. */
export const CONSOLE_CSS = `
:root {
  --bg: #f6f7f9; --card: #fff; --text: #1d2433; --muted: #6b7385; --line: #e3e6ec; --accent: #3b5bdb; --accent-2: #2f4ac0;
  --ok: #2b8a3e; --bad: #c92a2a; --warn: #e67700; --run: #1971c2; --wait: #5f3dc4; --idle: #868e96;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; font-size: 14px; color: var(--text);
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.top { display: flex; align-items: center; gap: 28px; padding: 0 24px; height: 52px; background: #151a2d; color: #fff; position: sticky; top: 0; z-index: 5; }
.brand { display: flex; align-items: baseline; gap: 8px; color: #fff; } .brand:hover { text-decoration: none; }
.logo { font-weight: 700; font-size: 18px; letter-spacing: .5px; } .schema { font-family: var(--mono); font-size: 12px; color: #9aa3b8; }
.top nav { display: flex; gap: 4px; flex: 1; }
.top nav a { color: #c5cbe0; padding: 6px 12px; border-radius: 6px; } .top nav a:hover { background: #232a44; color: #fff; text-decoration: none; }
.top nav a.active { background: #2c3557; color: #fff; }
.status { display: flex; gap: 8px; }
.pill { font-size: 12px; padding: 3px 10px; border-radius: 999px; background: #2c3557; color: #c5cbe0; }
.pill.readonly { background: #5c3b00; color: #ffd8a8; }
.live-dot::before { content: ""; display: inline-block; width: 7px; height: 7px; border-radius: 50%; margin-right: 6px; background: #868e96; vertical-align: 1px; }
.live-dot.on::before { background: #51cf66; box-shadow: 0 0 0 3px rgba(81,207,102,.25); } .live-dot.off::before { background: #fa5252; }
main { max-width: 1320px; margin: 0 auto; padding: 20px 24px 48px; }
.page-head { display: flex; align-items: center; justify-content: space-between; gap: 16px; margin: 4px 0 16px; flex-wrap: wrap; }
h1 { font-size: 22px; margin: 0; font-weight: 650; display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .6px; color: var(--muted); margin: 0 0 12px; font-weight: 600; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; margin-bottom: 16px; }
.card h2 + h2, .card > * + h2 { margin-top: 18px; }
.grid-2 { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; } .grid-2 > .card { margin-bottom: 0; } .grid-2 { margin-bottom: 16px; }
@media (max-width: 900px) { .grid-2 { grid-template-columns: 1fr; } }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-bottom: 16px; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; color: var(--text); border-top: 3px solid var(--line); }
a.tile:hover { text-decoration: none; border-color: #c8cedb; }
.tile-value { font-size: 26px; font-weight: 650; font-variant-numeric: tabular-nums; } .tile-label { color: var(--muted); font-size: 12px; margin-top: 2px; }
.tone-running { border-top-color: var(--run); } .tone-available { border-top-color: var(--wait); } .tone-succeeded { border-top-color: var(--ok); } .tone-failed { border-top-color: var(--bad); } .tone-failed .tile-value { color: var(--bad); }
.table-wrap { overflow-x: auto; background: var(--card); border: 1px solid var(--line); border-radius: 10px; }
.card .table-wrap { border: 0; border-radius: 0; margin: 0 -18px; }
table { width: 100%; border-collapse: collapse; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; padding: 9px 12px; border-bottom: 1px solid var(--line); background: #fafbfc; white-space: nowrap; }
td { padding: 9px 12px; border-bottom: 1px solid #eef0f4; vertical-align: middle; }
tr:last-child td { border-bottom: 0; } tbody tr:hover td { background: #fafbff; }
.mono, code, pre { font-family: var(--mono); font-size: 12.5px; }
code { background: #f1f3f7; padding: 1px 5px; border-radius: 4px; }
.muted { color: var(--muted); } .small { font-size: 12px; } .warn { color: var(--warn); font-weight: 600; }
.empty { padding: 36px; text-align: center; color: var(--muted); background: var(--card); border: 1px dashed var(--line); border-radius: 10px; }
.badge { display: inline-block; font-size: 11.5px; font-weight: 600; padding: 2px 8px; border-radius: 999px; background: #eef0f4; color: #495057; white-space: nowrap; }
.state-succeeded { background: #ebfbee; color: var(--ok); } .state-failed { background: #fff5f5; color: var(--bad); }
.state-running { background: #e7f5ff; color: var(--run); } .state-available { background: #f3f0ff; color: var(--wait); }
.state-retryable { background: #fff4e6; color: var(--warn); } .state-scheduled { background: #f8f9fa; color: #495057; }
.state-cancelled { background: #f1f3f5; color: #868e96; } .state-blocked { background: #fff9db; color: #946800; }
.state-cancelling { background: #fff4e6; color: #c2410c; }
.status-active { background: #ebfbee; color: var(--ok); } .status-paused { background: #fff4e6; color: var(--warn); } .status-disabled { background: #f1f3f5; color: #868e96; }
.badge.leader { background: #fff3bf; color: #8a6100; } .badge.status-dead { background: #fff5f5; color: #c92a2a; }
.state-text-failed { color: var(--bad); } .state-text-running { color: var(--run); } .state-text-available { color: var(--wait); } .state-text-retryable { color: var(--warn); }
.state-text-blocked { color: #946800; } .state-text-scheduled, .state-text-cancelled { color: #495057; }
a.count { font-variant-numeric: tabular-nums; font-weight: 600; } a.count.zero { color: #ced4da; font-weight: 400; }
.btn { font: inherit; font-size: 13px; border-radius: 6px; padding: 5px 12px; border: 1px solid #cfd4de; background: #fff; color: var(--text); cursor: pointer; display: inline-block; line-height: 1.4; }
.btn:hover { background: #f4f6fa; text-decoration: none; } .btn:disabled { opacity: .5; cursor: default; }
.btn.primary { background: var(--accent); border-color: var(--accent); color: #fff; } .btn.primary:hover { background: var(--accent-2); }
.btn.danger { color: var(--bad); border-color: #f1b5b5; } .btn.danger:hover { background: #fff5f5; }
.actions { display: flex; gap: 6px; justify-content: flex-end; flex-wrap: wrap; }
td .actions { flex-wrap: nowrap; } td .actions .btn { padding: 3px 9px; font-size: 12px; white-space: nowrap; }
td a.task, td .nowrap { white-space: nowrap; }
.filters { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-end; background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; margin-bottom: 12px; }
.filters label { display: flex; flex-direction: column; gap: 4px; font-size: 11.5px; color: var(--muted); text-transform: uppercase; letter-spacing: .4px; }
.filters input, .filters select { font: inherit; font-size: 13px; text-transform: none; letter-spacing: 0; height: 32px; padding: 0 8px; border: 1px solid #cfd4de; border-radius: 6px; width: 140px; color: var(--text); background: #fff; }
.filters select[name=state] { width: 120px; } .filters input[name=payload], .filters input[name=error] { width: 220px; }
.filters .btn { height: 32px; }
.filter-buttons { display: flex; gap: 6px; }
.bulk { display: flex; gap: 8px; align-items: center; padding: 8px 14px; background: #f3f5ff; border: 1px solid #dbe1ff; border-radius: 10px; margin-bottom: 12px; flex-wrap: wrap; }
.pager { display: flex; gap: 8px; justify-content: flex-end; margin-top: 12px; }
.error-snippet { color: var(--bad); font-size: 12.5px; }
.progress { position: relative; height: 18px; background: #eef0f4; border-radius: 999px; overflow: hidden; min-width: 120px; }
.progress .bar { height: 100%; background: linear-gradient(90deg, #a5b4fc, #8ea2f8); transition: width .4s ease; }
.progress .bar.bar-bad { background: linear-gradient(90deg, #ffc9c9, #ffa8a8); }
.progress .label { position: absolute; inset: 0; text-align: center; font-size: 11.5px; font-weight: 600; line-height: 18px; color: #1d2433; }
.progress.small { height: 14px; } .progress.small .label { line-height: 14px; font-size: 10.5px; }
.progress-json { display: block; margin-top: 6px; }
dl.facts { display: grid; grid-template-columns: 120px 1fr; gap: 8px 12px; margin: 0; } dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.task-name { font-family: var(--mono); font-size: 16px; font-weight: 500; color: #3b4256; }
pre.json, pre.stack { background: #f8f9fb; border: 1px solid #eceff3; border-radius: 8px; padding: 12px; overflow: auto; max-height: 420px; margin: 0; white-space: pre-wrap; word-break: break-word; }
pre.stack { color: #862e2e; background: #fffafa; border-color: #f5dede; }
.error-entry { border-top: 1px solid #eef0f4; padding: 12px 0; } .error-entry:first-of-type { border-top: 0; padding-top: 0; }
.error-head { display: flex; gap: 10px; align-items: center; } .error-message { font-weight: 600; margin: 8px 0; white-space: pre-wrap; }
.timeline { list-style: none; margin: 0; padding: 0 0 0 14px; border-left: 2px solid var(--line); }
.timeline li { position: relative; padding: 0 0 12px 12px; } .timeline li::before { content: ""; position: absolute; left: -20px; top: 4px; width: 10px; height: 10px; border-radius: 50%; background: #fff; border: 2px solid var(--accent); }
.timeline .when { font-size: 12px; color: var(--muted); }
.footnote { color: var(--muted); font-size: 12px; margin: 10px 0 0; }
.segmented { display: inline-flex; border: 1px solid #cfd4de; border-radius: 7px; overflow: hidden; background: #fff; }
.segmented .seg { padding: 5px 12px; color: var(--text); font-size: 13px; } .segmented .seg.active { background: #151a2d; color: #fff; } .segmented .seg:hover { text-decoration: none; }
.chart { width: 100%; height: auto; display: block; }
.chart .grid { stroke: #eef0f4; } .chart .tick { font-size: 10px; fill: #8a92a5; font-family: var(--mono); }
.bar-succeeded { fill: #51cf66; background: #51cf66; } .bar-failed { fill: #fa5252; background: #fa5252; } .bar-cancelled { fill: #adb5bd; background: #adb5bd; }
.chart .hit { fill: transparent; } .chart g:hover .hit { fill: rgba(59,91,219,.06); }
.chart .line { fill: none; stroke: #4c6ef5; stroke-width: 2; } .chart .dot { fill: #4c6ef5; }
.legend { display: flex; gap: 8px; align-items: center; color: var(--muted); font-size: 12px; margin-top: 6px; }
.legend .sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-left: 8px; } .legend .sw:first-child { margin-left: 0; } .line-sw { background: #4c6ef5; }
.chip { display: inline-block; font-size: 12px; padding: 1px 8px; border-radius: 999px; background: #eef1ff; margin: 0 4px 2px 0; }
.chip.limit { background: #f1f3f5; color: #343a40; white-space: nowrap; } .control { display: inline-flex; flex-wrap: wrap; gap: 4px; align-items: center; } .control .chip { margin: 0; }
details.limits { position: relative; } details.limits > summary { list-style: none; } details.limits > summary::-webkit-details-marker { display: none; }
td .actions details.limits > summary.btn { padding: 3px 9px; font-size: 12px; } details.limits[open] > summary { background: #eef1ff; border-color: #bac8ff; }
.limits-form { position: absolute; right: 0; top: calc(100% + 6px); z-index: 4; width: 260px; background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px; box-shadow: 0 12px 32px rgba(20,25,45,.18); display: flex; flex-direction: column; gap: 10px; text-align: left; }
.limits-form label { display: flex; flex-direction: column; gap: 4px; font-size: 11.5px; color: var(--muted); text-transform: uppercase; letter-spacing: .4px; }
.limits-form input { font: inherit; font-size: 13px; padding: 6px 8px; border: 1px solid #cfd4de; border-radius: 6px; color: var(--text); }
.limits-form .footnote { margin: 0; } .form-buttons { display: flex; justify-content: flex-end; }
.queues-page .table-wrap { overflow: visible; } .queues-page > .footnote { margin-top: 12px; }
.graph-wrap { overflow-x: auto; padding: 6px 0; }
.graph .edge { fill: none; stroke: #adb5bd; stroke-width: 1.6; } .graph .edge-succeeded { stroke: #8ce99a; } .graph .edge-failed { stroke: #ffa8a8; }
.graph .arrow { fill: #adb5bd; }
.graph .node-box { stroke-width: 1.5; } .graph .node:hover .node-box { filter: brightness(.97); stroke-width: 2.5; }
.graph .node-name { font-size: 13px; font-weight: 600; fill: #1d2433; } .graph .node-state { font-size: 11px; fill: #5c6377; font-family: var(--mono); }
.state-fill-succeeded { fill: #ebfbee; stroke: #69db7c; } .state-fill-failed { fill: #fff5f5; stroke: #ff8787; } .state-fill-running { fill: #e7f5ff; stroke: #4dabf7; }
.state-fill-available { fill: #f3f0ff; stroke: #9775fa; } .state-fill-blocked { fill: #fff9db; stroke: #fcc419; } .state-fill-cancelled { fill: #f1f3f5; stroke: #adb5bd; }
.state-fill-retryable { fill: #fff4e6; stroke: #ffa94d; } .state-fill-scheduled { fill: #f8f9fa; stroke: #ced4da; }
#flash { display: none; margin-bottom: 12px; padding: 10px 14px; border-radius: 8px; font-weight: 500; }
#flash.show { display: block; } #flash.ok { background: #ebfbee; color: #1e6b30; border: 1px solid #b2f2bb; } #flash.error { background: #fff5f5; color: #a61e1e; border: 1px solid #ffc9c9; }
dialog { border: 1px solid var(--line); border-radius: 12px; padding: 20px 22px; min-width: 340px; box-shadow: 0 20px 50px rgba(20,25,45,.25); }
dialog::backdrop { background: rgba(21,26,45,.45); } dialog .message { margin: 0 0 16px; font-size: 15px; }
dialog menu { display: flex; justify-content: flex-end; gap: 8px; margin: 0; padding: 0; }
`;

/** The tab icon. */
export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#151a2d"/><path d="M8 11h16M8 16h12M8 21h8" stroke="#51cf66" stroke-width="3" stroke-linecap="round"/></svg>`;
