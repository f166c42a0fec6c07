"""What the onboarding tools say to a technician, in Portuguese (pt-BR) or English.

One catalogue, ``MESSAGES``: a key names each message, with its Portuguese and English
text as ``str.format`` templates; ``say(lang, key, **values)`` picks one. Numbers that
people read (percentages, seconds) are formatted by ``number`` with the language's
decimal mark.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["LANGS", "MESSAGES", "Lang", "number", "say"]

Lang = Literal["pt-BR", "en"]
LANGS: tuple[Lang, ...] = ("pt-BR", "en")

MESSAGES: dict[str, tuple[str, str]] = {
    # capture: detection
    "listen": (
        "Ouvindo {port} a {settings} (tentativa {attempt} de {attempts})."
        " Aperte IMPRIMIR no medidor...",
        "Listening on {port} at {settings} (attempt {attempt} of {attempts})."
        " Press PRINT on the meter...",
    ),
    "confirm": (
        "Conferindo {settings} (o formato achado a 8N1). Aperte IMPRIMIR de novo...",
        "Checking {settings} (the format found at 8N1). Press PRINT again...",
    ),
    "refused": (
        "A porta recusa {settings} (pseudo-terminal ou adaptador sem paridade):"
        " fica valendo o que se viu a 8N1.",
        "The port refuses {settings} (a pseudo-terminal or an adapter without parity):"
        " what was seen at 8N1 stands.",
    ),
    "sample_garbage": (
        "  {size} bytes a {settings}: ilegível ({quality}% texto, {errors} erros de"
        " enquadramento). {preview}",
        "  {size} bytes at {settings}: unreadable ({quality}% text, {errors} framing"
        " errors). {preview}",
    ),
    "sample_clean": (
        "  {size} bytes a {settings}: texto limpo ({quality}% texto, {lines} fins de linha).",
        "  {size} bytes at {settings}: clean text ({quality}% text, {lines} line ends).",
    ),
    "waiting": (
        "Aguardando bytes a {settings} (nada há {idle} s). Aperte IMPRIMIR no medidor;"
        " Ctrl-C para parar.",
        "Waiting for bytes at {settings} (nothing for {idle} s). Press PRINT on the meter;"
        " Ctrl-C to stop.",
    ),
    "waiting_more": (
        "Recebendo a {settings}: {size} bytes até agora, ainda sem certeza. Aperte IMPRIMIR"
        " de novo...",
        "Receiving at {settings}: {size} bytes so far, not sure yet. Press PRINT again...",
    ),
    "decided": (
        "Configuração encontrada: {settings}, confiança {level} ({confidence}%). {why}",
        "Settings found: {settings}, confidence {level} ({confidence}%). {why}",
    ),
    "why_clean": (
        "Os bytes a {heard} se explicam como {format} ({consistency}% conferem).",
        "The bytes at {heard} read as {format} ({consistency}% fit).",
    ),
    "why_confirmed": (
        "Conferido ouvindo a {settings}: texto limpo.",
        "Confirmed by listening at {settings}: clean text.",
    ),
    "why_refused": (
        "Deduzido dos bytes a 8N1; a porta não aceita {format} para conferir.",
        "Inferred from the bytes at 8N1; the port does not take {format} to check.",
    ),
    "cannot_silence": (
        "Não foi possível determinar: nada chegou em nenhuma configuração. Confira o cabo"
        " (talvez precise de um null-modem), a saída serial do medidor e se ele imprime.",
        "Cannot tell: nothing arrived at any setting. Check the cable (a null-modem may be"
        " needed), the meter's serial output and that it prints.",
    ),
    "cannot_garbage": (
        "Não foi possível determinar: nenhuma configuração deu texto limpo (a melhor foi"
        " {best}, {quality}% texto). Talvez uma velocidade fora da lista, ou ruído na linha;"
        " informe --baud e o formato à mão.",
        "Cannot tell: no setting gave clean text (the best was {best}, {quality}% text)."
        " Perhaps a baud rate outside the list, or line noise; give --baud and the format"
        " by hand.",
    ),
    "cannot_ambiguous": (
        "Não foi possível determinar com certeza: {best} parece texto, mas os bytes não"
        " bastam para separar os formatos. Capture de novo imprimindo mais.",
        "Cannot tell for sure: {best} looks like text but there were too few bytes to tell"
        " the formats apart. Capture again and print more.",
    ),
    "level_high": ("alta", "high"),
    "level_medium": ("média", "medium"),
    "level_low": ("baixa", "low"),
    # capture: recording
    "recording": (
        "Gravando em {file} a {settings}. Aperte IMPRIMIR mais algumas vezes (5 ou mais"
        " tíquetes); Ctrl-C para terminar.",
        "Recording to {file} at {settings}. Press PRINT a few more times (5 tickets or"
        " more); Ctrl-C to finish.",
    ),
    "recording_heard": (
        "A porta fica a {heard}; a captura guarda os bytes como chegam.",
        "The port stays at {heard}; the capture keeps the bytes as they come.",
    ),
    "progress": (
        "[{elapsed} s] {bursts} rajadas, {size} bytes gravados; último byte há {idle} s.",
        "[{elapsed} s] {bursts} bursts, {size} bytes recorded; last byte {idle} s ago.",
    ),
    "not_text": (
        "Atenção: os bytes a {settings} não parecem texto ({quality}% legível)."
        " As configurações estão certas?",
        "Warning: the bytes at {settings} do not look like text ({quality}% readable)."
        " Are the settings right?",
    ),
    "port_lost": (
        "A porta {port} sumiu ({error}): cabo desconectado? A captura parcial ficou"
        " guardada em {file} ({size} bytes).",
        "The port {port} went away ({error}): cable unplugged? The partial capture is kept"
        " in {file} ({size} bytes).",
    ),
    "cannot_open": (
        "Não foi possível abrir {port}: {error}",
        "Cannot open {port}: {error}",
    ),
    "done": (
        "Captura guardada em {file}: {bursts} rajadas, {size} bytes em {elapsed} s."
        " Próximo passo: coffee-telemetry propose {file}",
        "Capture saved in {file}: {bursts} bursts, {size} bytes in {elapsed} s."
        " Next: coffee-telemetry propose {file}",
    ),
    "done_nothing": (
        "Captura guardada em {file}, sem gravação (configuração não determinada).",
        "Capture saved in {file}, with no recording (settings not found).",
    ),
    "sent": ("  -> enviado ao medidor: {data}", "  -> sent to the meter: {data}"),
    # propose
    "p_capture": (
        "Captura {file}: {settings}, {chunks} pedaços, {size} bytes em {elapsed} s.",
        "Capture {file}: {settings}, {chunks} chunks, {size} bytes in {elapsed} s.",
    ),
    "p_warning": ("Atenção: {text}", "Warning: {text}"),
    "p_tickets": ("Tíquetes encontrados: {count}.", "Tickets found: {count}."),
    "p_bound_ff": (
        "  terminam com FF (avanço de página): {count}",
        "  end with FF (form feed): {count}",
    ),
    "p_bound_init": (
        "  começam com ESC @ (novo trabalho de impressão): {count}",
        "  start with ESC @ (a new print job): {count}",
    ),
    "p_bound_header": (
        "  cabeçalho repetido: '{header}' (start_regex)",
        "  repeated header: '{header}' (start_regex)",
    ),
    "p_bound_footer": (
        "  última linha repetida: '{footer}' (end_regex)",
        "  repeated last line: '{footer}' (end_regex)",
    ),
    "p_bound_gap": (
        "  pausas entre rajadas: {between} s ou mais; dentro de uma: até {inside} s"
        " (idle_gap_s = {idle})",
        "  pauses between bursts: {between} s or more; inside one: up to {inside} s"
        " (idle_gap_s = {idle})",
    ),
    "p_line_ending": ("  fim de linha: {ending}", "  line ending: {ending}"),
    "p_field": (
        "  {field:<20} rótulo {labels} em {tickets} de {total} tíquetes",
        "  {field:<20} label {labels} in {tickets} of {total} tickets",
    ),
    "p_fields": ("Campos reconhecidos:", "Fields recognised:"),
    "p_unexplained": ("Não explicado (não será lido):", "Unexplained (will not be read):"),
    "p_unexplained_item": ("  {label}: {examples}", "  {label}: {examples}"),
    "p_driver": (
        "Driver proposto: {driver} ({share}% dos quadros válidos).",
        "Proposed driver: {driver} ({share}% of frames valid).",
    ),
    "p_others": ("  outros que leem algo: {others}", "  others that read something: {others}"),
    "p_profile": (
        "Perfil: {profile} ({title}); lê a captura igual ao bloco explícito. Fonte: {source}",
        "Profile: {profile} ({title}); it reads the capture exactly as the explicit block"
        " does. Source: {source}",
    ),
    "p_no_profile": (
        "Nenhum perfil conhecido lê esta captura igual (perfis de {driver}: {known});"
        " o bloco fica explícito.",
        "No known profile reads this capture the same (profiles for {driver}: {known});"
        " the block stays explicit.",
    ),
    "p_check": (
        "Conferência (a captura inteira lida pelo driver do agente, com os tempos"
        " originais): {frames} quadros válidos, {readings} leituras.",
        "Check (the whole capture read by the agent's driver, with its original timing):"
        " {frames} valid frames, {readings} readings.",
    ),
    "p_discarded": ("  descartados: {reasons}", "  discarded: {reasons}"),
    "p_value_num": (
        "  {field:<20} {count} valores, de {low} a {high}",
        "  {field:<20} {count} values, {low} to {high}",
    ),
    "p_value_text": (
        "  {field:<20} {count} valores, ex.: {examples}",
        "  {field:<20} {count} values, e.g. {examples}",
    ),
    "p_block": (
        "Cole o bloco abaixo no site.toml e confira com: coffee-telemetry check-config site.toml",
        "Paste the block below into site.toml and check it with: coffee-telemetry check-config"
        " site.toml",
    ),
    "p_golden": ("Caso de teste gravado em {folder}", "Test case written to {folder}"),
    "r_no-recording": (
        "Nada a propor: a captura não tem gravação (a configuração serial não foi"
        " determinada). Capture de novo, ou informe --baud e o formato.",
        "Nothing to propose: the capture has no recording (the serial settings were not"
        " found). Capture again, or give --baud and the format.",
    ),
    "r_empty": (
        "Nada a propor: a gravação não tem bytes ({size}). O medidor imprimiu?",
        "Nothing to propose: the recording has no bytes ({size}). Did the meter print?",
    ),
    "r_not-text": (
        "Nada a propor: só {quality}% dos {size} bytes parecem texto. Configuração serial"
        " errada, ou ruído na linha?",
        "Nothing to propose: only {quality}% of the {size} bytes look like text. Wrong serial"
        " settings, or line noise?",
    ),
    "r_no-moisture-label": (
        "Nada a propor: há texto com rótulos ({labels}), mas nenhum de umidade, e nenhum"
        " protocolo de balança o lê.",
        "Nothing to propose: there is text with labels ({labels}) but none for moisture, and"
        " no scale protocol reads it.",
    ),
    "r_unframed": (
        "Nada a propor: o texto ({size} bytes) não tem rótulos reconhecidos nem quadros de"
        " um protocolo conhecido.",
        "Nothing to propose: the text ({size} bytes) has no known labels and no frames of a"
        " known protocol.",
    ),
}


def number(value: float, lang: Lang, decimals: int = 0) -> str:
    """``value`` with ``decimals`` decimals and the language's decimal mark."""
    text = f"{value:.{decimals}f}"
    return text.replace(".", ",") if lang == "pt-BR" else text


def say(lang: Lang, key: str, **values: object) -> str:
    """The message ``key`` in ``lang``, filled with ``values``."""
    pt, en = MESSAGES[key]
    return (pt if lang == "pt-BR" else en).format(**values)
