"""Evidence a buyer accepts: members, their plots and the signed lot pack.

``geo`` reads plot outlines from hostile files (GeoJSON, KML, the zipped shapefiles of
Brazil's rural registry, CAR) into validated WGS84 geometry; ``store`` keeps members,
plots, the lots' members and every manifest issued (SQLite); ``pack`` writes and checks
a lot's pack (GeoJSON of the plots, the lot's CSV and PDF report, a signed manifest).
``meters`` names each reading's meter and calibration, and keeps the records and the
lots' reference oven results; ``meter_report`` turns them into the lot report's meter
evidence (per reading, cross-checks between meters, bias against the oven).
``oven`` takes the oven result from MQTT and the web (``cmd/lotoven/<lot>``) and gives
the Lote page its meter evidence as JSON.
"""
