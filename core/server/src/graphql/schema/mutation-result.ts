/** Naming of mutation results: `<Name>Result = <Name>Payload | <error types>`, data under `dataField`. */
export function resultOf(name: string, dataField: string) {
  return { union: { name: `${name}Result` }, result: { name: `${name}Payload` }, dataField: { name: dataField } };
}
