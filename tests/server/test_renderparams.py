"""Rendered and WADO-URI query parameters parsed into typed options, each bad value named (HTTP 400)."""

from __future__ import annotations

import pytest

from dicomweb_nb.pixels.render import RenderOptions, RenderParameterError, Viewport
from dicomweb_nb.pixels.renderparams import parse_rendered_params
from dicomweb_nb.pixels.voi import Window
from dicomweb_nb.server.renderparams import parse_wado_uri_params


def test_parse_rendered_params_reads_bytes_and_lists():
    options = parse_rendered_params({"window": [b"-600,1500,SIGMOID"], "viewport": "512,256", "quality": ["80"],
                                     "annotation": ["patient"], "charset": ["utf-8"]})
    assert options == RenderOptions(window=Window(-600, 1500, "SIGMOID"), viewport=Viewport(512, 256), quality=80,
                                    annotation=("patient",))
    assert parse_rendered_params({}) == RenderOptions()
    assert parse_rendered_params({"window": "40,400"}).window == Window(40, 400, "LINEAR")


@pytest.mark.parametrize(
    "query, parameter, message",
    [
        ({"window": "40"}, "window", "center,width,function"),
        ({"window": "40,400,linear,x"}, "window", "center,width,function"),
        ({"window": "forty,400,linear"}, "window", "center 'forty' is not a number"),
        ({"window": "40,wide,linear"}, "window", "width 'wide' is not a number"),
        ({"window": "40,0.5,linear"}, "window", "at least 1"),
        ({"window": "40,0,sigmoid"}, "window", "greater than 0"),
        ({"window": "40,400,gamma"}, "window", "linear, linear-exact, sigmoid"),
        ({"window": "nan,400,linear"}, "window", "finite"),
        ({"window": ["40,400", "50,400"]}, "window", "given 2 times"),
        ({"viewport": "512"}, "viewport", "vw,vh"),
        ({"viewport": "512,512,0,0"}, "viewport", "vw,vh"),
        ({"viewport": "0,512"}, "viewport", "vw must be"),
        ({"viewport": "512,-5"}, "viewport", "vh must be"),
        ({"viewport": "a,512"}, "viewport", "vw 'a' is not an integer"),
        ({"viewport": ","}, "viewport", "give vw, vh or both"),
        ({"viewport": "10,10,-1,0,5,5"}, "viewport", "sx, sy must not be negative"),
        ({"viewport": "10,10,0,0,0,5"}, "viewport", "sw and sh must not be 0"),
        ({"quality": "0"}, "quality", "between 1 and 100"),
        ({"quality": "101"}, "quality", "between 1 and 100"),
        ({"quality": "high"}, "quality", "not an integer"),
        ({"window": b"\xff\xfe"}, "window", "UTF-8"),
    ],
)
def test_bad_rendered_parameters_name_the_parameter(query, parameter, message):
    with pytest.raises(RenderParameterError) as info:
        parse_rendered_params(query)
    assert info.value.parameter == parameter
    assert str(info.value).startswith(f"{parameter}: ")
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


WADO = {"requestType": "WADO", "studyUID": "1.2.840.1", "seriesUID": "1.2.840.1.2", "objectUID": "1.2.840.1.2.3"}


def test_parse_wado_uri_full_request():
    request = parse_wado_uri_params({
        **{k: [v] for k, v in WADO.items()},
        "contentType": ["image/jpeg, image/png"], "frameNumber": ["3"], "imageQuality": ["70"],
        "windowCenter": ["-600"], "windowWidth": ["1500"], "columns": ["256"], "annotation": ["patient,technique"],
        "charset": ["UTF-8"],
    })
    assert (request.study_uid, request.series_uid, request.object_uid) == ("1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3")
    assert request.content_types == ("image/jpeg", "image/png") and not request.wants_dicom
    assert request.frame_number == 3 and request.annotation == ("patient", "technique")
    assert request.render == RenderOptions(
        window=Window(-600, 1500), columns=256, quality=70, annotation=("patient", "technique")
    )
    dicom = parse_wado_uri_params({**WADO, "contentType": "application/dicom",
                                   "transferSyntax": "1.2.840.10008.1.2.4.50", "anonymize": "yes"})
    assert dicom.wants_dicom and dicom.transfer_syntax == "1.2.840.10008.1.2.4.50" and dicom.anonymize
    assert parse_wado_uri_params(WADO).content_types == ()
    # Orthanc's form: objectUID alone identifies the instance.
    only_object = parse_wado_uri_params({"requestType": "WADO", "objectUID": "1.2.840.1.2.3"})
    assert (only_object.study_uid, only_object.series_uid, only_object.object_uid) == ("", "", "1.2.840.1.2.3")


@pytest.mark.parametrize(
    "change, parameter, message",
    [
        ({"requestType": None}, "requestType", "is required"),
        ({"requestType": "WADO-RS"}, "requestType", "must be WADO"),
        ({"objectUID": None}, "objectUID", "is required"),
        ({"studyUID": "1.2.x"}, "studyUID", "not a DICOM UID"),
        ({"objectUID": "1.2.abc"}, "objectUID", "not a DICOM UID"),
        ({"objectUID": "1." * 40 + "1"}, "objectUID", "not a DICOM UID"),
        ({"windowCenter": "40"}, "windowWidth", "together"),
        ({"windowWidth": "400"}, "windowCenter", "together"),
        ({"windowCenter": "40", "windowWidth": "0"}, "windowWidth", "at least 1"),
        ({"windowCenter": "x", "windowWidth": "400"}, "windowWidth", "not a number"),
        ({"rows": "0"}, "rows", "at least 1"),
        ({"columns": "1.5"}, "columns", "not an integer"),
        ({"region": "0,0,1"}, "region", "x1,y1,x2,y2"),
        ({"region": "0,0,1.2,1"}, "region", "0.0..1.0"),
        ({"region": "0.5,0,0.5,1"}, "region", "x1 < x2"),
        ({"region": "0,a,1,1"}, "region", "not a number"),
        ({"imageQuality": "0"}, "imageQuality", "between 1 and 100"),
        ({"frameNumber": "0"}, "frameNumber", "at least 1"),
        ({"frameNumber": "first"}, "frameNumber", "not an integer"),
        ({"contentType": "application/dicom", "rows": "10"}, "rows", "must not be present"),
        ({"contentType": "application/dicom", "windowCenter": "1", "windowWidth": "2"}, "windowCenter", "must not"),
        ({"contentType": "image/jpeg", "transferSyntax": "1.2.840.10008.1.2.1"}, "transferSyntax", "only allowed"),
        ({"contentType": "image/"}, "contentType", ""),
        ({"contentType": " , "}, "contentType", "is empty"),
        ({"transferSyntax": "JPEG"}, "transferSyntax", "not a DICOM UID"),
        ({"anonymize": "no"}, "anonymize", "'yes'"),
        ({"annotation": "patient,name"}, "annotation", "patient and/or technique"),
        ({"presentationUID": "1.2.3"}, "presentationSeriesUID", "is required"),
        ({"presentationSeriesUID": "1.2.3"}, "presentationUID", "is required"),
    ],
)
def test_bad_wado_uri_parameters_name_the_parameter(change, parameter, message):
    query = {**WADO, **change}
    query = {k: v for k, v in query.items() if v is not None}
    with pytest.raises(RenderParameterError) as info:
        parse_wado_uri_params(query)
    assert info.value.parameter == parameter
    assert message in str(info.value)
