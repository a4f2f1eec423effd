// Per-panel-type types: a panel of each visualisation the dashboards use must
// match that visualisation's published schema (panelcfg types from
// @grafana/schema) for `options` and `fieldConfig.defaults.custom`, on top of
// the generic Panel type. gen.mjs refuses panel types not listed here, so a
// new visualisation means adding its schema below.
import type { Dashboard, Panel, RowPanel, FieldConfigSource } from '@grafana/schema';
import type {
  Options as TimeSeriesOptions,
  FieldConfig as TimeSeriesFieldConfig,
} from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type { Options as StatOptions } from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type {
  Options as StateTimelineOptions,
  FieldConfig as StateTimelineFieldConfig,
} from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type {
  Options as TableOptions,
  FieldConfig as TableFieldConfig,
} from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';

/**
 * The JSON form of a schema type. Grafana's generated types use TypeScript
 * enums (`FieldColorModeId.Thresholds`), while dashboard JSON stores the
 * enum's value (`"thresholds"`): map every string enum to the union of its
 * values. Numeric enums already accept number literals. Optionality and
 * excess-property checks are preserved (homomorphic mapped type).
 */
export type Jsonify<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends (...args: never[]) => unknown
      ? never
      : { [K in keyof T]: Jsonify<T[K]> };

type Typed<T extends string, O, C> = Omit<Panel, 'options' | 'fieldConfig' | 'type'> & {
  type: T;
  options: O;
  fieldConfig: Omit<FieldConfigSource, 'defaults'> & {
    defaults: Omit<FieldConfigSource['defaults'], 'custom'> & { custom?: C };
  };
};

export type PanelTypes = {
  timeseries: Jsonify<Typed<'timeseries', TimeSeriesOptions, TimeSeriesFieldConfig>>;
  stat: Jsonify<Typed<'stat', StatOptions, Record<string, never>>>;
  'state-timeline': Jsonify<Typed<'state-timeline', StateTimelineOptions, StateTimelineFieldConfig>>;
  // Table options have required keys with defaults Grafana fills in.
  table: Jsonify<Typed<'table', Partial<TableOptions>, TableFieldConfig>>;
  row: Jsonify<RowPanel>;
};

export type DashboardJson = Jsonify<Dashboard>;
