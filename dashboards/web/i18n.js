// Every string the dashboard shows, in Brazilian Portuguese (the default: the
// warehouse staff read it) and English. Keys are grouped by page. Device, lot and
// alert texts come from the agent and are never translated here.
//
// Placeholders are {name}; t() fills them in. The result is always put into the
// DOM as text (textContent), so a placeholder value can never become markup.
//
// To add a string: add the key to BOTH tables below, then call
// t("your.key", {param: value}). A key missing from English falls back to the
// Portuguese text; missingKeys() lists the gaps.

export const LANGS = ["pt-BR", "en"];
export const DEFAULT_LANG = "pt-BR";

const STRINGS = {
  "pt-BR": {
    "app.title": "Telemetria do café",
    "app.loading": "Carregando…",
    "app.loadError": "Não foi possível carregar os dados do agente.",
    "app.retrying": "Tentando de novo…",
    "app.networkError": "Sem conexão com o agente.",
    "app.httpError": "Erro {status} do agente.",
    "app.sessionExpired": "Sessão expirada. Entre de novo.",

    "nav.label": "Páginas",
    "nav.armazem": "Armazém",
    "nav.descascadores": "Descascadores",
    "nav.dispositivos": "Dispositivos",
    "nav.alertas": "Alertas",
    "nav.alertCount": "{n} alertas abertos",

    "lang.other": "English",
    "lang.switch": "Switch the dashboard to English",

    "live.open": "Ao vivo",
    "live.closed": "Sem conexão",
    "live.openTitle": "Recebendo leituras ao vivo do agente",
    "live.closedTitle": "Conexão ao vivo perdida; reconectando sozinho",

    "login.open": "Entrar",
    "login.title": "Entrar",
    "login.intro": "Entre para ver o painel.",
    "login.user": "Usuário",
    "login.password": "Senha",
    "login.submit": "Entrar",
    "login.cancel": "Cancelar",
    "login.failed": "Usuário ou senha incorretos.",
    "login.tooMany": "Muitas tentativas. Aguarde um pouco e tente de novo.",
    "login.busy": "Entrando…",
    "session.user": "Usuário: {user}",
    logout: "Sair",
    "hint.login": "Entre para alterar",

    "common.none": "—",
    "common.online": "ONLINE",
    "common.offline": "OFFLINE",
    "common.sending": "Enviando…",

    "rel.now": "agora",
    "rel.s": "há {n} s",
    "rel.min": "há {n} min",
    "rel.h": "há {n} h",
    "rel.d": "há {n} d",
    "rel.future": "em {n} s",

    "dur.dh": "{d} d {h} h",
    "dur.hm": "{h} h {m} min",
    "dur.m": "{m} min",

    "armazem.title": "Armazém",
    "armazem.wetTitle": "LOTE ÚMIDO",
    "armazem.wetAcked": "Reconhecido por {by}",
    "armazem.wetSince": "desde {time}",
    "armazem.seeAlerts": "Ver alertas",
    "armazem.moreAlerts": "E mais {n} — ver alertas",
    "armazem.noMeters": "Nenhum medidor de umidade configurado.",
    "armazem.station": "Estação",
    "armazem.activeLot": "Lote ativo",
    "armazem.noLot": "nenhum",
    "armazem.lotSetBy": "definido por {by} às {time}",
    "meter.lot": "Lote",
    "meter.product": "Produto",
    "meter.time": "Leitura",
    "meter.temperature": "Temperatura",
    "meter.threshold": "Limite {v} %",
    "meter.noReading": "Sem leitura",
    "status.ok": "OK",
    "status.wet": "ÚMIDO",
    "status.noData": "SEM LEITURA",

    "lot.label": "Código do lote",
    "lot.placeholder": "ex.: L-0044",
    "lot.set": "Definir lote",
    "lot.clear": "Encerrar lote",
    "lot.empty": "Digite o código do lote.",
    "lot.saved": "Lote {lot} definido.",
    "lot.cleared": "Lote encerrado.",

    "chart.moisture": "Umidade (%)",
    "chart.threshold": "Limite {v} %",
    "chart.range": "Período do gráfico",
    "chart.range.1h": "1 h",
    "chart.range.24h": "24 h",
    "chart.range.7d": "7 d",
    "chart.range.30d": "30 d",
    "chart.noData": "Sem leituras neste período.",
    "chart.loadError": "Não foi possível carregar o gráfico.",
    "chart.time": "Hora",

    "lots.title": "Lotes de hoje",
    "lots.empty": "Nenhum lote medido hoje.",
    "lots.lot": "Lote",
    "lots.station": "Estação",
    "lots.product": "Produto",
    "lots.count": "Leituras",
    "lots.mean": "Média",
    "lots.max": "Máxima",
    "lots.status": "Situação",

    "hullers.title": "Descascadores",
    "hullers.none": "Nenhum descascador configurado.",
    "huller.running": "RODANDO",
    "huller.stopped": "PARADO",
    "huller.unknown": "SEM DADOS",
    "huller.bagsHour": "Sacas/hora",
    "huller.bagsToday": "Sacas hoje",
    "huller.hoursToday": "Horas hoje",
    "huller.hoursTotal": "Horas totais",
    "huller.station": "Estação {station}",
    "huller.lastSeen": "Último sinal",
    "huller.tasks": "Manutenção",
    "huller.chart": "Horas rodando por dia",
    "huller.chartHours": "Horas",
    "task.state.ok": "EM DIA",
    "task.state.due": "VENCENDO",
    "task.state.overdue": "ATRASADA",
    "task.state.unknown": "SEM DADOS",
    "task.of": "de {interval} h",
    "task.remaining": "faltam {h} h",
    "task.overdueBy": "passou {h} h",
    "task.lastService": "Último serviço: {time} por {by}",
    "task.lastServiceNote": "“{note}”",
    "task.never": "Nenhum serviço registrado.",
    "service.note": "Observação",
    "service.notePlaceholder": "ex.: filtro trocado",
    "service.submit": "Registrar serviço feito",
    "service.saved": "Serviço registrado.",

    "devices.title": "Dispositivos",
    "devices.none": "Nenhum dispositivo configurado.",
    "devices.device": "Dispositivo",
    "devices.state": "Estado",
    "devices.lastSeen": "Último sinal",
    "devices.framesOk": "Quadros OK",
    "devices.discarded": "Descartados",
    "devices.errors": "Erros",
    "devices.port": "Porta serial",
    "devices.reconnects": "Reconexões",
    "devices.lastError": "Último erro: {error}",
    "sinks.title": "Envio de dados",
    "sinks.none": "Nenhum destino configurado.",
    "sinks.sink": "Destino",
    "sinks.connected": "Conexão",
    "sinks.backlog": "Na fila",
    "sinks.lastDelivery": "Última entrega",
    "sinks.delivered": "Entregues",
    "sinks.rejected": "Rejeitados",
    "sinks.dropped": "Perdidos",
    "sinks.yes": "CONECTADO",
    "sinks.no": "DESCONECTADO",
    "sinks.never": "nunca",
    "history.title": "Histórico local",
    "history.off": "Histórico local desligado.",
    "history.used": "{used} de {max} em disco",
    "history.droppedRaw": "Pontos antigos descartados: {n}",
    "agent.title": "Agente",
    "agent.version": "Versão {v}",
    "agent.uptime": "Rodando há {d}",

    "alerts.title": "Alertas",
    "alerts.open": "Alertas abertos",
    "alerts.recent": "Alertas recentes",
    "alerts.noneOpen": "Nenhum alerta aberto.",
    "alerts.noneRecent": "Nenhum alerta recente.",
    "alerts.severity": "Gravidade",
    "alerts.rule": "Regra",
    "alerts.subject": "Sobre",
    "alerts.message": "Mensagem",
    "alerts.since": "Desde",
    "alerts.time": "Hora",
    "alerts.state": "Estado",
    "alerts.ackedBy": "Reconhecido por",
    "alerts.action": "Ação",
    "alerts.ack": "Reconhecer",
    "alerts.acked": "Alerta reconhecido.",
    "alert.state.pending": "PENDENTE",
    "alert.state.firing": "DISPARADO",
    "alert.state.acknowledged": "RECONHECIDO",
    "alert.state.resolved": "RESOLVIDO",
    "alert.severity.critical": "CRÍTICO",
    "alert.severity.warning": "AVISO",
    "alert.severity.info": "INFO",
    "alert.rule.wet_lot": "Lote úmido",
    "alert.rule.device_silent": "Dispositivo sem sinal",
    "alert.rule.huller_fault": "Falha no descascador",
    "alert.rule.service_due": "Manutenção vencendo",
    "alert.rule.service_overdue": "Manutenção atrasada",
    "alert.rule.sink_backlog": "Envio de dados parado",
  },

  en: {
    "app.title": "Coffee telemetry",
    "app.loading": "Loading…",
    "app.loadError": "Could not load the agent's data.",
    "app.retrying": "Retrying…",
    "app.networkError": "No connection to the agent.",
    "app.httpError": "The agent answered error {status}.",
    "app.sessionExpired": "Session expired. Please sign in again.",

    "nav.label": "Pages",
    "nav.armazem": "Warehouse",
    "nav.descascadores": "Hullers",
    "nav.dispositivos": "Devices",
    "nav.alertas": "Alerts",
    "nav.alertCount": "{n} open alerts",

    "lang.other": "Português",
    "lang.switch": "Mudar o painel para português",

    "live.open": "Live",
    "live.closed": "Disconnected",
    "live.openTitle": "Receiving live readings from the agent",
    "live.closedTitle": "Live connection lost; reconnecting on its own",

    "login.open": "Sign in",
    "login.title": "Sign in",
    "login.intro": "Sign in to see the dashboard.",
    "login.user": "User",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.cancel": "Cancel",
    "login.failed": "Wrong user or password.",
    "login.tooMany": "Too many attempts. Wait a little and try again.",
    "login.busy": "Signing in…",
    "session.user": "User: {user}",
    logout: "Sign out",
    "hint.login": "Sign in to make changes",

    "common.none": "—",
    "common.online": "ONLINE",
    "common.offline": "OFFLINE",
    "common.sending": "Sending…",

    "rel.now": "now",
    "rel.s": "{n} s ago",
    "rel.min": "{n} min ago",
    "rel.h": "{n} h ago",
    "rel.d": "{n} d ago",
    "rel.future": "in {n} s",

    "dur.dh": "{d} d {h} h",
    "dur.hm": "{h} h {m} min",
    "dur.m": "{m} min",

    "armazem.title": "Warehouse",
    "armazem.wetTitle": "WET LOT",
    "armazem.wetAcked": "Acknowledged by {by}",
    "armazem.wetSince": "since {time}",
    "armazem.seeAlerts": "See alerts",
    "armazem.moreAlerts": "And {n} more — see alerts",
    "armazem.noMeters": "No moisture meter configured.",
    "armazem.station": "Station",
    "armazem.activeLot": "Active lot",
    "armazem.noLot": "none",
    "armazem.lotSetBy": "set by {by} at {time}",
    "meter.lot": "Lot",
    "meter.product": "Product",
    "meter.time": "Reading",
    "meter.temperature": "Temperature",
    "meter.threshold": "Threshold {v} %",
    "meter.noReading": "No reading",
    "status.ok": "OK",
    "status.wet": "WET",
    "status.noData": "NO READING",

    "lot.label": "Lot code",
    "lot.placeholder": "e.g. L-0044",
    "lot.set": "Set lot",
    "lot.clear": "Clear lot",
    "lot.empty": "Type a lot code.",
    "lot.saved": "Lot {lot} set.",
    "lot.cleared": "Lot cleared.",

    "chart.moisture": "Moisture (%)",
    "chart.threshold": "Threshold {v} %",
    "chart.range": "Chart range",
    "chart.range.1h": "1 h",
    "chart.range.24h": "24 h",
    "chart.range.7d": "7 d",
    "chart.range.30d": "30 d",
    "chart.noData": "No readings in this range.",
    "chart.loadError": "Could not load the chart.",
    "chart.time": "Time",

    "lots.title": "Today's lots",
    "lots.empty": "No lot measured today.",
    "lots.lot": "Lot",
    "lots.station": "Station",
    "lots.product": "Product",
    "lots.count": "Readings",
    "lots.mean": "Mean",
    "lots.max": "Max",
    "lots.status": "Status",

    "hullers.title": "Hullers",
    "hullers.none": "No huller configured.",
    "huller.running": "RUNNING",
    "huller.stopped": "STOPPED",
    "huller.unknown": "NO DATA",
    "huller.bagsHour": "Bags/hour",
    "huller.bagsToday": "Bags today",
    "huller.hoursToday": "Hours today",
    "huller.hoursTotal": "Total hours",
    "huller.station": "Station {station}",
    "huller.lastSeen": "Last seen",
    "huller.tasks": "Maintenance",
    "huller.chart": "Running hours per day",
    "huller.chartHours": "Hours",
    "task.state.ok": "OK",
    "task.state.due": "DUE",
    "task.state.overdue": "OVERDUE",
    "task.state.unknown": "UNKNOWN",
    "task.of": "of {interval} h",
    "task.remaining": "{h} h left",
    "task.overdueBy": "{h} h past",
    "task.lastService": "Last service: {time} by {by}",
    "task.lastServiceNote": "“{note}”",
    "task.never": "No service recorded.",
    "service.note": "Note",
    "service.notePlaceholder": "e.g. filter replaced",
    "service.submit": "Record service done",
    "service.saved": "Service recorded.",

    "devices.title": "Devices",
    "devices.none": "No device configured.",
    "devices.device": "Device",
    "devices.state": "State",
    "devices.lastSeen": "Last seen",
    "devices.framesOk": "Frames OK",
    "devices.discarded": "Discarded",
    "devices.errors": "Errors",
    "devices.port": "Serial port",
    "devices.reconnects": "Reconnects",
    "devices.lastError": "Last error: {error}",
    "sinks.title": "Data delivery",
    "sinks.none": "No sink configured.",
    "sinks.sink": "Sink",
    "sinks.connected": "Connection",
    "sinks.backlog": "Backlog",
    "sinks.lastDelivery": "Last delivery",
    "sinks.delivered": "Delivered",
    "sinks.rejected": "Rejected",
    "sinks.dropped": "Dropped",
    "sinks.yes": "CONNECTED",
    "sinks.no": "DISCONNECTED",
    "sinks.never": "never",
    "history.title": "Local history",
    "history.off": "Local history is off.",
    "history.used": "{used} of {max} on disk",
    "history.droppedRaw": "Old points dropped: {n}",
    "agent.title": "Agent",
    "agent.version": "Version {v}",
    "agent.uptime": "Up for {d}",

    "alerts.title": "Alerts",
    "alerts.open": "Open alerts",
    "alerts.recent": "Recent alerts",
    "alerts.noneOpen": "No open alerts.",
    "alerts.noneRecent": "No recent alerts.",
    "alerts.severity": "Severity",
    "alerts.rule": "Rule",
    "alerts.subject": "Subject",
    "alerts.message": "Message",
    "alerts.since": "Since",
    "alerts.time": "Time",
    "alerts.state": "State",
    "alerts.ackedBy": "Acknowledged by",
    "alerts.action": "Action",
    "alerts.ack": "Acknowledge",
    "alerts.acked": "Alert acknowledged.",
    "alert.state.pending": "PENDING",
    "alert.state.firing": "FIRING",
    "alert.state.acknowledged": "ACKNOWLEDGED",
    "alert.state.resolved": "RESOLVED",
    "alert.severity.critical": "CRITICAL",
    "alert.severity.warning": "WARNING",
    "alert.severity.info": "INFO",
    "alert.rule.wet_lot": "Wet lot",
    "alert.rule.device_silent": "Silent device",
    "alert.rule.huller_fault": "Huller fault",
    "alert.rule.service_due": "Service due",
    "alert.rule.service_overdue": "Service overdue",
    "alert.rule.sink_backlog": "Delivery stalled",
  },
};

let current = DEFAULT_LANG;

/** Normalise whatever the URL, localStorage or the agent said into one of LANGS. */
export function normaliseLang(value) {
  if (typeof value !== "string") return null;
  const v = value.trim().toLowerCase();
  if (v === "pt" || v === "pt-br" || v === "pt_br") return "pt-BR";
  if (v === "en" || v.startsWith("en-")) return "en";
  return null;
}

export function setLang(value) {
  current = normaliseLang(value) || DEFAULT_LANG;
  document.documentElement.lang = current;
  return current;
}

export function getLang() {
  return current;
}

export function otherLang() {
  return current === "en" ? "pt-BR" : "en";
}

/** Translate `key`, filling {placeholders} from `params`. */
export function t(key, params) {
  // A key missing in one language falls back to the other, then to the key
  // itself: visible on screen, but never a console warning (the browser tests
  // treat any console output as a failure).
  const text = STRINGS[current][key] ?? STRINGS[DEFAULT_LANG][key] ?? key;
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) =>
    Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole,
  );
}

/** Translate a server-side code (alert state, rule...) that may be new to us. */
export function tCode(prefix, code) {
  const key = `${prefix}.${code}`;
  return STRINGS[current][key] ?? STRINGS[DEFAULT_LANG][key] ?? String(code ?? "");
}

/** Keys present in one table and missing from the other (for a check from the browser console or a test). */
export function missingKeys() {
  const pt = Object.keys(STRINGS["pt-BR"]);
  const en = Object.keys(STRINGS.en);
  return {
    en: pt.filter((k) => !(k in STRINGS.en)),
    "pt-BR": en.filter((k) => !(k in STRINGS["pt-BR"])),
  };
}
