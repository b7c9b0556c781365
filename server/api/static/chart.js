// A uPlot line chart of metrics by step, as a Preact component. `series` names the fields of
// each metrics event's `data` to draw; `points` is [{step, ...fields}] in step order.
import { h } from "preact";
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import htm from "htm";

const html = htm.bind(h);
const COLORS = ["#1d4ed8", "#dc2626", "#059669", "#d97706", "#7c3aed"];

export function columns(points, series) {
  const xs = points.map((p) => p.step);
  return [xs, ...series.map((s) => points.map((p) => (typeof p[s.key] === "number" ? p[s.key] : null)))];
}

export function Chart({ id, title, points, series }) {
  const box = useRef(null);
  const plot = useRef(null);
  const present = series.filter((s) => points.some((p) => typeof p[s.key] === "number"));
  const shown = present.length ? present : series.slice(0, 1);
  const signature = shown.map((s) => s.key).join(",");
  const count = points.filter((p) => shown.some((s) => typeof p[s.key] === "number")).length;

  useEffect(() => {
    if (!box.current || !count) return undefined;
    const width = Math.max(box.current.clientWidth, 300);
    const opts = {
      title, width, height: 220,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      series: [{ label: "step" }, ...shown.map((s, i) => ({
        label: s.label || s.key, stroke: COLORS[i % COLORS.length], width: 2,
        spanGaps: true, points: { show: points.length < 60 },
      }))],
    };
    plot.current = new uPlot(opts, columns(points, shown), box.current);
    const resize = () => plot.current && plot.current.setSize({ width: Math.max(box.current.clientWidth, 300), height: 220 });
    window.addEventListener("resize", resize);
    return () => {
      window.removeEventListener("resize", resize);
      plot.current && plot.current.destroy();
      plot.current = null;
    };
  }, [signature, count > 0]);

  useEffect(() => {
    if (plot.current) plot.current.setData(columns(points, shown));
  }, [points, signature]);

  return html`<div class="chart" id=${id} data-points=${count}>
    ${count ? html`<div ref=${box}></div>` : html`<div class="empty" ref=${box}>${title}: no data yet</div>`}
  </div>`;
}
