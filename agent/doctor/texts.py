"""What ``doctor`` says, in Portuguese (pt-BR) or English.

One catalogue, ``MESSAGES``: each key names a message or a fix, with its Portuguese
and English ``str.format`` templates, filled from ``Result.values``. A template never
asks for a value its check does not give (a test renders every result of every check
in both languages).
"""

from __future__ import annotations

from collections.abc import Mapping

from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.onboard.texts import Lang, number

__all__ = ["LABELS", "MESSAGES", "render", "say"]

#: How each status is shown, per language.
LABELS: dict[Status, tuple[str, str]] = {
    Status.OK: ("OK", "OK"),
    Status.WARN: ("AVISO", "WARN"),
    Status.FAIL: ("FALHA", "FAIL"),
}

MESSAGES: dict[str, tuple[str, str]] = {
    # serial ports
    "port_exists": ("{port} existe ({real})", "{port} exists ({real})"),
    "port_missing": ("{port} não existe", "{port} does not exist"),
    "port_dangling": (
        "{port} aponta para {real}, que não existe",
        "{port} points to {real}, which does not exist",
    ),
    "port_stat_failed": ("não consigo ver {port}: {error}", "cannot see {port}: {error}"),
    "port_access_ok": (
        "{user} pode abrir {port} (modo {mode}, grupo {group})",
        "{user} may open {port} (mode {mode}, group {group})",
    ),
    "port_access_denied": (
        "{user} não pode abrir {port} (modo {mode}, grupo {group})",
        "{user} may not open {port} (mode {mode}, group {group})",
    ),
    "port_free": ("{port} está livre", "{port} is free"),
    "port_free_partial": (
        "nenhum processo visível usa {port} (sem root não vejo os de outros usuários)",
        "no visible process uses {port} (without root, other users' are hidden)",
    ),
    "port_held": ("{port} está em uso por {holders}", "{port} is in use by {holders}"),
    "port_held_by_agent": (
        "{port} está sendo lido pelo agente ({holders}); não escutei para não roubar bytes",
        "{port} is being read by the agent ({holders}); not listened to, not to steal bytes",
    ),
    "port_not_listened": (
        "não escutei {port}: este usuário não pode abri-lo",
        "{port} not listened to: this user may not open it",
    ),
    "port_open_failed": ("não consegui abrir {port}: {error}", "cannot open {port}: {error}"),
    "port_silent": (
        "nada chegou em {port} em {seconds} s a {settings}",
        "nothing arrived on {port} in {seconds} s at {settings}",
    ),
    "port_text": (
        "{size} bytes em {seconds} s, texto legível a {settings} ({quality}% texto)",
        "{size} bytes in {seconds} s, readable text at {settings} ({quality}% text)",
    ),
    "port_wrong_format": (
        "{size} bytes chegam, mas parecem {found} e a configuração diz {settings}",
        "{size} bytes arrive, but they look like {found} and the config says {settings}",
    ),
    "port_garbage": (
        "{size} bytes chegam, ilegíveis a {settings} ({quality}% texto); não deu para adivinhar",
        "{size} bytes arrive, unreadable at {settings} ({quality}% text); no guess found",
    ),
    "port_garbage_guess": (
        "{size} bytes ilegíveis a {settings} ({quality}% texto); parece ser {found}",
        "{size} bytes unreadable at {settings} ({quality}% text); looks like {found}",
    ),
    "fix_port_missing": (
        "ligue o medidor e o adaptador USB; confira [devices] port com ls -l /dev/serial/by-id/",
        "plug in the meter and the USB adapter; check [devices] port with ls -l /dev/serial/by-id/",
    ),
    "fix_port_group": (
        "sudo usermod -aG {group} {user} (e reinicie o serviço), ou SupplementaryGroups={group}"
        " na unidade",
        "sudo usermod -aG {group} {user} (then restart the service), or"
        " SupplementaryGroups={group} in the unit",
    ),
    "fix_port_mode": (
        "instale a regra udev deploy/99-coffee-telemetry.rules (grupo dialout, modo 660) e"
        " religue o adaptador",
        "install the udev rule deploy/99-coffee-telemetry.rules (group dialout, mode 660) and"
        " replug the adapter",
    ),
    "fix_port_held": (
        "feche o programa (sudo kill {pid}) ou pare o outro agente",
        "close that program (sudo kill {pid}) or stop the other agent",
    ),
    "fix_port_open": (
        "feche quem usa a porta (fuser -v {port}) ou religue o adaptador",
        "close whatever uses the port (fuser -v {port}) or replug the adapter",
    ),
    "fix_port_silent": (
        "aperte IMPRIMIR no medidor e rode de novo; confira o cabo (talvez null-modem)",
        "press PRINT on the meter and run again; check the cable (a null-modem may be needed)",
    ),
    "fix_port_settings": (
        "ajuste [devices.serial] para {found} (ou confira com coffee-telemetry capture {port})",
        "set [devices.serial] to {found} (or check with coffee-telemetry capture {port})",
    ),
    "fix_port_cable": (
        "confira o cabo e o menu serial do medidor; coffee-telemetry capture {port} detecta",
        "check the cable and the meter's serial menu; coffee-telemetry capture {port} detects",
    ),
    "fix_run_as_root": ("rode com sudo para ver tudo", "run with sudo to see everything"),
    # TLS
    "tls_ok": (
        "certificado de {server} válido até {expires} ({days} dias)",
        "{server}'s certificate valid until {expires} ({days} days)",
    ),
    "tls_expiring": (
        "certificado de {server} vence em {days} dias ({expires})",
        "{server}'s certificate expires in {days} days ({expires})",
    ),
    "tls_invalid": (
        "certificado de {server} recusado: {error}",
        "{server}'s certificate refused: {error}",
    ),
    "tls_handshake": ("TLS com {server} falhou: {error}", "TLS with {server} failed: {error}"),
    "tls_files": ("arquivos TLS ilegíveis: {error}", "TLS files unreadable: {error}"),
    "tls_unchecked": (
        "TLS com {server} sem conferir o certificado (insecure = true)",
        "TLS with {server} without checking the certificate (insecure = true)",
    ),
    "fix_tls_renew": (
        "renove o certificado do servidor antes que vença",
        "renew the server's certificate before it expires",
    ),
    "fix_tls_invalid": (
        "confira ca_file em [*.tls], a data do relógio e o nome do servidor no certificado",
        "check ca_file in [*.tls], the clock's date and the server name in the certificate",
    ),
    "fix_tls_handshake": (
        "confira se a porta do servidor é a de TLS",
        "check that the server's port is its TLS one",
    ),
    "fix_tls_files": (
        "confira ca_file, cert_file e key_file em [*.tls]",
        "check ca_file, cert_file and key_file in [*.tls]",
    ),
    "fix_tls_insecure": (
        "use ca_file com a CA do servidor e tire insecure = true",
        "use ca_file with the server's CA and drop insecure = true",
    ),
    # MQTT
    "mqtt_ok": (
        "broker {server} aceitou a conexão (usuário {user})",
        "broker {server} accepted the connection (user {user})",
    ),
    "mqtt_refused": (
        "broker {server} recusou: {reason} (código {code}, usuário {user})",
        "broker {server} refused: {reason} (code {code}, user {user})",
    ),
    "mqtt_unreachable": (
        "broker {server} inalcançável: {error}",
        "broker {server} unreachable: {error}",
    ),
    "mqtt_no_connack": (
        "broker {server} não respondeu ao CONNECT a tempo",
        "broker {server} did not answer CONNECT in time",
    ),
    "fix_mqtt_credentials": (
        "confira [mqtt] username e a senha (password_file/password_env) no broker",
        "check [mqtt] username and the password (password_file/password_env) on the broker",
    ),
    "fix_mqtt_refused": (
        "confira o client_id e as permissões (ACL) do usuário no broker",
        "check the client_id and the user's permissions (ACL) on the broker",
    ),
    "fix_mqtt_down": (
        "confira se o broker roda (systemctl status mosquitto), [mqtt] host/port e a rede",
        "check the broker runs (systemctl status mosquitto), [mqtt] host/port and the network",
    ),
    # InfluxDB
    "influx_ping_ok": (
        "InfluxDB {server} responde (versão {version})",
        "InfluxDB {server} answers (version {version})",
    ),
    "influx_ping_status": (
        "InfluxDB {server} respondeu {status} ao /ping",
        "InfluxDB {server} answered {status} to /ping",
    ),
    "influx_unreachable": (
        "InfluxDB {server} inalcançável: {error}",
        "InfluxDB {server} unreachable: {error}",
    ),
    "influx_auth_ok": (
        "InfluxDB aceita consulta e escrita em {target} com as credenciais",
        "InfluxDB accepts a query and a write on {target} with the credentials",
    ),
    "influx_denied": (
        "InfluxDB recusou as credenciais ({method}, HTTP {status}: {error})",
        "InfluxDB refused the credentials ({method}, HTTP {status}: {error})",
    ),
    "influx_missing": (
        "InfluxDB não tem {target} ({method}, HTTP {status}: {error})",
        "InfluxDB has no {target} ({method}, HTTP {status}: {error})",
    ),
    "influx_error": (
        "InfluxDB respondeu com erro ({method}, HTTP {status}: {error})",
        "InfluxDB answered with an error ({method}, HTTP {status}: {error})",
    ),
    "fix_influx_down": (
        "confira se o InfluxDB roda (systemctl status influxdb) e [influx] url",
        "check InfluxDB runs (systemctl status influxdb) and [influx] url",
    ),
    "fix_influx_credentials": (
        "confira [influx] username/senha ou token e as permissões de escrita",
        "check [influx] username/password or token and the write permissions",
    ),
    "fix_influx_missing": (
        "crie o banco/bucket {target} ou ligue [influx] create_database",
        "create the database/bucket {target} or set [influx] create_database",
    ),
    # clock
    "clock_synced": (
        "relógio sincronizado ({source}; agora {now})",
        "clock synchronised ({source}; now {now})",
    ),
    "clock_unsynced": (
        "relógio NÃO sincronizado ({source}; agora {now})",
        "clock NOT synchronised ({source}; now {now})",
    ),
    "clock_unknown": (
        "não sei dizer se o relógio está sincronizado (sem timedatectl nem adjtimex); agora {now}",
        "cannot tell whether the clock is synchronised (no timedatectl nor adjtimex); now {now}",
    ),
    "clock_before_floor": (
        "relógio em {now}, antes da instalação do agente ({floor})",
        "clock at {now}, before the agent was installed ({floor})",
    ),
    "fix_clock_ntp_off": (
        "ligue o NTP: sudo timedatectl set-ntp true",
        "turn NTP on: sudo timedatectl set-ntp true",
    ),
    "fix_clock_unsynced": (
        "sem internet o NTP não sincroniza: confira a rede, um GPS ou acerte pelo painel",
        "without internet NTP cannot sync: check the network, a GPS, or set it from the dashboard",
    ),
    "fix_clock_unknown": (
        "confira a data com date -u e compare com um celular",
        "check the date with date -u and compare with a phone",
    ),
    "fix_clock_set": (
        "acerte o relógio (sudo timedatectl set-time 'AAAA-MM-DD HH:MM:SS') ou ligue o NTP",
        "set the clock (sudo timedatectl set-time 'YYYY-MM-DD HH:MM:SS') or turn NTP on",
    ),
    # time sources ([agent] time_sources)
    "time_ntp_ok": (
        "NTP: relógio sincronizado (agora {now})",
        "NTP: clock synchronised (now {now})",
    ),
    "time_ntp_unsynced": (
        "NTP: relógio NÃO sincronizado (agora {now})",
        "NTP: clock NOT synchronised (now {now})",
    ),
    "time_ntp_unknown": (
        "NTP: não sei dizer se sincronizou (sem adjtimex); agora {now}",
        "NTP: cannot tell whether it synchronised (no adjtimex); now {now}",
    ),
    "fix_time_ntp": (
        "sem internet o NTP não sincroniza: ligue-o (sudo timedatectl set-ntp true), "
        "confira a rede ou use um GPS",
        "without internet NTP cannot sync: turn it on (sudo timedatectl set-ntp true), "
        "check the network or use a GPS",
    ),
    "time_system_ok": (
        "relógio do sistema aceito como está (agora {now})",
        "system clock taken as it is (now {now})",
    ),
    "time_rtc_ok": (
        "o relógio com bateria acertou a hora no boot (agora {now})",
        "the battery clock set the time at boot (now {now})",
    ),
    "time_rtc_unset": (
        "nenhum relógio com bateria acertou a hora no boot",
        "no battery clock set the time at boot",
    ),
    "fix_time_rtc": (
        "instale um módulo RTC (DS3231) com dtoverlay=i2c-rtc,ds3231 ou use outra fonte",
        "fit an RTC module (DS3231) with dtoverlay=i2c-rtc,ds3231, or use another source",
    ),
    "time_before_floor": (
        "hora {time}, antes da data desta versão ({floor}): não é aceita",
        "time {time}, before this version's release date ({floor}): not believed",
    ),
    "time_after_ceiling": (
        "hora {time}, depois da última hora crível ({ceiling}): não é aceita",
        "time {time}, after the latest believable time ({ceiling}): not believed",
    ),
    "fix_time_bounds": (
        "compare com um celular e acerte a fonte (GPS com bug de semana, modem sem "
        "hora da rede, relógio com bateria gasta)",
        "compare with a phone and fix the source (a GPS with the week bug, a modem "
        "without network time, a battery clock run flat)",
    ),
    "time_gps_unset": (
        "gps está em time_sources mas falta [agent.time_gps]",
        "gps is in time_sources but [agent.time_gps] is missing",
    ),
    "time_gps_not_listened": (
        "receptor em {port} (não escutado: --no-ports)",
        "receiver on {port} (not listened to: --no-ports)",
    ),
    "time_gps_port_missing": ("GPS: {port} não existe", "GPS: {port} does not exist"),
    "fix_time_gps_port": (
        "ligue o receptor no USB e confira [agent.time_gps] port (ls /dev/serial/by-id/)",
        "plug the receiver in and check [agent.time_gps] port (ls /dev/serial/by-id/)",
    ),
    "time_gps_held": (
        "GPS: {port} está em uso por {holders}",
        "GPS: {port} is in use by {holders}",
    ),
    "fix_time_gps_held": (
        "pare quem segura a porta (sudo systemctl disable --now gpsd gpsd.socket)",
        "stop whoever holds the port (sudo systemctl disable --now gpsd gpsd.socket)",
    ),
    "time_gps_held_by_agent": (
        "GPS: {port} está sendo lido pelo agente ({holders}); veja /api/health",
        "GPS: {port} is being read by the agent ({holders}); see /api/health",
    ),
    "time_gps_open_failed": (
        "GPS: não consegui abrir {port}: {error}",
        "GPS: cannot open {port}: {error}",
    ),
    "fix_time_gps_open": (
        "confira as permissões (grupo dialout) e se o receptor está ligado",
        "check the permissions (group dialout) and that the receiver is plugged in",
    ),
    "time_gps_fix": (
        "GPS com fix: {time} (relógio menos GPS: {offset_s} s)",
        "GPS has a fix: {time} (clock minus GPS: {offset_s} s)",
    ),
    "time_gps_no_fix": (
        "GPS sem fix em {port} (nenhum satélite em {seconds} s)",
        "GPS has no fix on {port} (no satellites in {seconds} s)",
    ),
    "fix_time_gps_sky": (
        "ponha a antena onde veja o céu (numa janela); o primeiro fix pode levar minutos",
        "put the antenna where it sees the sky (a window); a first fix may take minutes",
    ),
    "time_gps_silent": (
        "GPS: nada chegou em {port} em {seconds} s",
        "GPS: nothing arrived on {port} in {seconds} s",
    ),
    "fix_time_gps_silent": (
        "confira o cabo e a alimentação do receptor, e que {port} é ele",
        "check the receiver's cable and power, and that {port} is it",
    ),
    "time_gps_no_time": (
        "GPS: frases NMEA em {port}, mas nenhuma RMC nem ZDA em {seconds} s",
        "GPS: NMEA sentences on {port}, but no RMC or ZDA in {seconds} s",
    ),
    "fix_time_gps_rmc": (
        "ligue as frases RMC no receptor (u-center: CFG-MSG)",
        "turn the RMC sentences on in the receiver (u-center: CFG-MSG)",
    ),
    "time_gps_garbage": (
        "GPS: {size} bytes em {port} a {baud} baud, nenhuma frase NMEA",
        "GPS: {size} bytes on {port} at {baud} baud, no NMEA sentence",
    ),
    "fix_time_gps_baud": (
        "confira [agent.time_gps] baud (a maioria 9600, os antigos 4800)",
        "check [agent.time_gps] baud (most 9600, older ones 4800)",
    ),
    "time_modem_unset": (
        "modem está em time_sources mas falta [notify.sms]",
        "modem is in time_sources but [notify.sms] is missing",
    ),
    "fix_time_modem_unset": (
        "configure o modem em [notify.sms] port ou tire modem de time_sources",
        "configure the modem in [notify.sms] port or take modem out of time_sources",
    ),
    "time_modem_port_missing": ("modem: {port} não existe", "modem: {port} does not exist"),
    "fix_time_modem_port": (
        "ligue o modem no USB e confira [notify.sms] port (ls /dev/serial/by-id/)",
        "plug the modem in and check [notify.sms] port (ls /dev/serial/by-id/)",
    ),
    "time_modem_present": (
        "modem em {port}; só o agente pergunta a hora da rede (AT+CCLK?); veja /api/health",
        "modem on {port}; only the agent asks it the network's time (AT+CCLK?); see /api/health",
    ),
    "time_user_ok": (
        "uma pessoa pode acertar a hora na página Dispositivos quando nenhuma outra fonte responde",
        "a person may set the time on the Dispositivos page when no other source answers",
    ),
    # disk
    "disk_ok": (
        "{free_mb} MB livres em {path} ({share}%)",
        "{free_mb} MB free on {path} ({share}%)",
    ),
    "disk_low": (
        "pouco espaço em {path}: {free_mb} MB livres ({share}%)",
        "low disk on {path}: {free_mb} MB free ({share}%)",
    ),
    "disk_below_quota": (
        "{free_mb} MB livres em {path}, menos que a cota do outbox ({quota_mb} MB)",
        "{free_mb} MB free on {path}, less than the outbox quota ({quota_mb} MB)",
    ),
    "disk_no_dir": (
        "{path} não existe ainda ({free_mb} MB livres no disco)",
        "{path} does not exist yet ({free_mb} MB free on the disk)",
    ),
    "disk_unreadable": (
        "não consigo ler o disco de {path}: {error}",
        "cannot read {path}'s disk: {error}",
    ),
    "fix_disk_low": (
        "apague arquivos velhos (journalctl --vacuum-size=100M) ou use um cartão maior",
        "delete old files (journalctl --vacuum-size=100M) or use a bigger card",
    ),
    "fix_disk_quota": (
        "baixe [outbox] max_mb ou libere espaço",
        "lower [outbox] max_mb or free some space",
    ),
    "fix_disk_missing": (
        "crie o diretório ([agent] data_dir) ou rode o instalador",
        "create the directory ([agent] data_dir) or run the installer",
    ),
    "storage_unknown": (
        "{path}: dispositivo de bloco desconhecido (tmpfs, overlay ou contêiner)",
        "{path}: unknown block device (tmpfs, overlay or container)",
    ),
    "storage_not_sd": (
        "{path} está em {device} (não é cartão SD)",
        "{path} is on {device} (not an SD card)",
    ),
    "storage_sd_normal": (
        "{path} está no cartão SD {device}; outbox synchronous = {synchronous} (menos escrita)",
        "{path} is on SD card {device}; outbox synchronous = {synchronous} (fewer writes)",
    ),
    "storage_sd_full": (
        "{path} está no cartão SD {device} com outbox synchronous = full (mais desgaste)",
        "{path} is on SD card {device} with outbox synchronous = full (more wear)",
    ),
    "fix_storage_sd": (
        'use [outbox] synchronous = "normal" (até ~1 s de leituras em risco numa queda de'
        " energia, bem menos escrita)",
        'use [outbox] synchronous = "normal" (up to ~1 s of readings at risk in a power'
        " cut, far fewer writes)",
    ),
    # outbox
    "outbox_current": (
        "em dia ({delivered} entregues)",
        "up to date ({delivered} delivered)",
    ),
    "outbox_pending": (
        "{backlog} a entregar, a mais antiga há {age}",
        "{backlog} to deliver, the oldest {age} ago",
    ),
    "outbox_behind": (
        "{backlog} atrasadas, a mais antiga há {age}",
        "{backlog} behind, the oldest {age} ago",
    ),
    "outbox_dead": (
        "{dead} registros recusados para sempre",
        "{dead} records refused for good",
    ),
    "outbox_missing": (
        "nenhum outbox em {path} (o agente ainda não rodou aqui?)",
        "no outbox at {path} (has the agent run here yet?)",
    ),
    "outbox_no_sinks": (
        "outbox em {path} com {records} registros e nenhum destino entregou ainda",
        "outbox at {path} holds {records} records and no sink has delivered yet",
    ),
    "outbox_unreadable": ("outbox ilegível: {error}", "outbox unreadable: {error}"),
    "fix_outbox_missing": (
        "inicie o agente: sudo systemctl start coffee-telemetry",
        "start the agent: sudo systemctl start coffee-telemetry",
    ),
    "fix_outbox_unreadable": (
        "confira dono e permissões de {path}",
        "check the owner and permissions of {path}",
    ),
    "fix_outbox_behind": (
        "confira a rede e o destino {sink} (veja as linhas mqtt/influx acima)",
        "check the network and the {sink} sink (see the mqtt/influx lines above)",
    ),
    "fix_outbox_dead": (
        "veja coffee-telemetry outbox -c ARQUIVO --dead",
        "see coffee-telemetry outbox -c FILE --dead",
    ),
    # systemd
    "systemd_active": ("serviço {unit}: ativo", "service {unit}: active"),
    "systemd_state": ("serviço {unit}: {state}", "service {unit}: {state}"),
    "systemd_absent": (
        "o systemd não roda nesta máquina: não sei o estado de {unit}",
        "systemd does not run this machine: {unit}'s state unknown",
    ),
    "systemd_no_answer": (
        "systemctl não respondeu sobre {unit}",
        "systemctl did not answer about {unit}",
    ),
    "fix_systemd_start": (
        "sudo systemctl enable --now {unit}; veja journalctl -u {unit} -n 50",
        "sudo systemctl enable --now {unit}; see journalctl -u {unit} -n 50",
    ),
    "fix_systemd_wait": (
        "espere alguns segundos e rode de novo",
        "wait a few seconds and run again",
    ),
    # the runner
    "check_timeout": (
        "não terminou em {seconds} s",
        "did not finish in {seconds} s",
    ),
    "check_crashed": ("a verificação falhou: {error}", "the check failed: {error}"),
    "fix_report": (
        "rode de novo; se repetir, mande esta saída ao suporte",
        "run again; if it repeats, send this output to support",
    ),
    "fix_label": ("correção", "fix"),
}


#: Longest text a value (often a server's answer) shows in a line.
MAX_VALUE_CHARS = 200


def _shown(value: object, lang: Lang) -> object:
    # Floats with the language's decimal mark; text on one line and bounded.
    if isinstance(value, float):
        return number(value, lang, 1)
    if isinstance(value, str):
        flat = "".join(c if c.isprintable() else " " for c in value)
        return flat[:MAX_VALUE_CHARS]
    return value


def say(lang: Lang, key: str, values: Mapping[str, object]) -> str:
    """The message ``key`` in ``lang``, filled with ``values`` (decimal mark of ``lang``)."""
    pt, en = MESSAGES[key]
    shown = {k: _shown(v, lang) for k, v in values.items()}
    return (pt if lang == "pt-BR" else en).format(**shown)


def render(result: Result, lang: Lang) -> str:
    """One line: status, subject, what was found and, if any, the fix."""
    label = LABELS[result.status][0 if lang == "pt-BR" else 1]
    line = f"{label:<5}  {result.subject}: {say(lang, result.message, result.values)}"
    if result.fix is not None:
        line += f" — {say(lang, 'fix_label', {})}: {say(lang, result.fix, result.values)}"
    return line
